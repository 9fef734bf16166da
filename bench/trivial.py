"""The baseline for the ingest benchmark: a Falcon ASGI endpoint that answers 204 and does nothing,
served by the same gunicorn settings as ``littlestats serve``."""

from __future__ import annotations

import sys
from typing import Any

import falcon
import falcon.asgi

from littlestats.config import load_settings
from littlestats.server import GunicornServer


class NoContent:
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        await req.stream.read()
        resp.status = falcon.HTTP_204

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str = "") -> None:
        resp.status = falcon.HTTP_204


class TrivialServer(GunicornServer):
    def load(self) -> Any:
        app = falcon.asgi.App()
        app.add_route("/api/v2/track/{site}", NoContent())
        app.add_route("/healthz", NoContent())
        return app


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    TrivialServer(load_settings({"port": port, "workers": workers, "log_level": "warning"})).run()
