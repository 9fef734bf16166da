"""Reading a JSON request body and naming what is wrong with it: one shape for every 400.

Every management resource (sites, goals, members, shares, tokens, segments, funnels, reports)
reads its body with ``json_body``, refuses fields it does not know with ``check_fields`` and
raises ``bad_param`` for a bad value, so every error says ``invalid parameter '<name>': …``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import falcon
import falcon.asgi
import orjson

from littlestats.http import read_body

MAX_BODY = 64 * 1024


def bad_param(name: str, message: str) -> falcon.HTTPBadRequest:
    """The 400 for a bad value of ``name``."""
    return falcon.HTTPBadRequest(description=f"invalid parameter '{name}': {message}")


async def json_body(req: falcon.asgi.Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); a 400 for anything else."""
    raw = await read_body(req, MAX_BODY)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise bad_param("body", "not JSON") from None
    if not isinstance(body, dict):
        raise bad_param("body", "expected a JSON object")
    return body


def check_fields(body: dict[str, Any], known: Iterable[str], required: Iterable[str] = ()) -> None:
    """Refuse the first field of ``body`` not in ``known``, then the first of ``required`` missing."""
    known = list(known)
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise bad_param(unknown[0], f"unknown field; known fields: {', '.join(known)}")
    for name in required:
        if name not in body:
            raise bad_param(name, "required")
