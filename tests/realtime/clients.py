"""Small real clients for the live feed: an SSE reader and a WebSocket reader, each on a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


def post_event(base: str, site: str, body: dict[str, Any], ua: str = CHROME) -> httpx.Response:
    """One beacon on a fresh connection (so the two workers share the posts)."""
    with httpx.Client(timeout=10) as client:
        r = client.post(f"{base}/api/v2/track/{site}", json=body, headers={"User-Agent": ua})
    assert r.status_code in (200, 202), r.text
    return r


class Collector:
    """Messages received so far, with a way to wait for a condition on them."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.ids: list[str | None] = []
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.closed = threading.Event()

    def add(self, message: dict[str, Any], event_id: str | None = None) -> None:
        with self.lock:
            self.messages.append(message)
            self.ids.append(event_id)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m.get("type") == kind]

    def events(self) -> list[dict[str, Any]]:
        return [m["event"] | {"id": m["id"]} for m in self.of_type("event")]

    def accounted(self) -> int:
        """Events received plus those a busy flush counted in a ``skipped`` message instead."""
        return len(self.of_type("event")) + sum(m["count"] for m in self.of_type("skipped"))

    def wait_for(self, check: Callable[[Collector], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return
            if self.error is not None:
                raise AssertionError(f"client failed: {self.error!r}")
            time.sleep(0.02)
        raise AssertionError(f"timed out; got {len(self.messages)} messages: {self.messages[-5:]}")


class SSEClient(Collector):
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.started = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait(10)

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(30, read=60)) as r:
                self.status, self.response_headers = r.status_code, r.headers
                self.started.set()
                if r.status_code != 200:
                    self.add(json.loads(r.read()))
                    return
                event_id, data = None, []
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and data:
                        self.add(json.loads("\n".join(data)), event_id)
                        event_id, data = None, []
        except BaseException as exc:  # surfaced by wait_for
            if not self._stop:
                self.error = exc
        finally:
            self.started.set()
            self.closed.set()

    def close(self) -> None:
        self._stop = True


class WSClient(Collector):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.ws = connect(url, open_timeout=10).__enter__()  # closed by close()
        self.close_code: int | None = None  # the server's close code, once it closed
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                self.add(json.loads(self.ws.recv()))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
        except BaseException as exc:
            self.error = exc
        finally:
            self.closed.set()

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def close(self) -> None:
        self.ws.close()
