"""``GET /api/v2/sites/{site}/export[?start=&end=]``: the site as a Plausible CE CSV export zip.

The zip (``interop.plausible_export``) is written by a worker thread into a temporary file under
the data directory and streamed from there, so memory stays bounded whatever the range; the file
is removed once sent (or, if the download never finished, by a later export an hour on). ``start`` / ``end`` are site-local dates (both inclusive); without them the
export covers the site's first to last day with data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.params import _one
from api.stats import warehouse, warehouse_unavailable
from interop.plausible_export import export_zip
from interop.plausible_layout import archive_filename
from warehouse.query.model import MAX_RANGE_DAYS

CHUNK = 1 << 16
#: A temporary zip older than this was left by a download that never finished: removed.
STALE_SECONDS = 3600


def _day(req: Any, name: str) -> date | None:
    text = _one(req, name)
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise falcon.HTTPBadRequest(description=f"invalid parameter '{name}': {text!r} is not a date like 2024-01-31") from None
    if not 1970 <= day.year <= 2999:
        raise falcon.HTTPBadRequest(description=f"invalid parameter '{name}': year must be between 1970 and 2999")
    return day


def _remove_stale(folder: Path) -> None:
    cutoff = time.time() - STALE_SECONDS
    for old in folder.glob("plausible-*.zip"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()


async def _send(path: Path) -> AsyncIterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class PlausibleExportResource:
    """The site's daily aggregates in Plausible CE's CSV export layout, as a zip download."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        start, end = _day(req, "start"), _day(req, "end")
        if start and end:
            if end < start:
                raise falcon.HTTPBadRequest(description="invalid parameter 'end': before start")
            if (end - start).days >= MAX_RANGE_DAYS:
                raise falcon.HTTPBadRequest(description=f"invalid parameter 'end': at most {MAX_RANGE_DAYS} days")
        folder = self.services.settings.run_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_stale(folder)
        fd, name = tempfile.mkstemp(prefix="plausible-", suffix=".zip", dir=folder)
        os.close(fd)
        path = Path(name)
        try:
            await asyncio.to_thread(export_zip, warehouse(self.services), found.id, found.timezone,
                                    start, end, path)
        except ValueError as exc:  # no data and no range
            path.unlink(missing_ok=True)
            raise falcon.HTTPNotFound(description=f"{exc}: send start and end for an empty export") from None
        except (OSError, ConnectionError, TimeoutError) as exc:
            path.unlink(missing_ok=True)
            raise warehouse_unavailable(exc) from None
        resp.content_type = "application/zip"
        filename = archive_filename(found.domain, datetime.now(UTC).date())
        resp.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        resp.set_header("Content-Length", str(path.stat().st_size))
        resp.stream = _send(path)
