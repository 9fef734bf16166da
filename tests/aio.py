"""Run a coroutine to completion from a synchronous test.

Playwright's sync API (the tracker tests) keeps an event loop running in the main thread of its
pytest worker for the whole session, so ``asyncio.run`` there would refuse to start. A fresh
thread has no running loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
