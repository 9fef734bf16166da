"""Imports over HTTP: ``POST/GET /api/v2/sites/{site}/imports``, ``DELETE …/imports/{import}``.

An upload is the export file, as the raw body (``?source=goatcounter``) or as
``multipart/form-data`` (fields ``source`` and ``file``). It is streamed to a file under the data
directory, hashed on the way (never held in memory; the worker lets this route's body be up to
``RequestLimits.max_import_bytes``). The hash names the import (``interop.records``): a file
already imported into the site is answered ``200`` with its record and nothing else happens;
otherwise the import runs as a ``littlestats import`` process of its own (it survives the request
and a worker restart, and resumes when the same file is uploaded again) and the answer is ``202``
with the record, whose ``status``, ``progress`` and counts ``GET`` shows as it goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.stats import warehouse
from interop.imports import SOURCES, ImportRefused, delete, exclusive, prepare
from interop.records import ImportStore
from littlestats.controlplane import Site
from littlestats.http import json_response
from warehouse.protocol import WarehouseError

CHUNK = 1 << 20


def _store(services: Any) -> ImportStore:
    store = services.extras.get("imports")
    if store is None:
        store = services.extras["imports"] = ImportStore(services.settings.control_db)
    return store  # type: ignore[no-any-return]


def _source(value: str | None) -> str:
    if not value:
        raise falcon.HTTPBadRequest(description="missing parameter 'source': one of "
                                    + ", ".join(SOURCES))
    if value not in SOURCES:
        raise falcon.HTTPBadRequest(description=f"invalid parameter 'source': {value!r} is not one"
                                    f" of {', '.join(SOURCES)}")
    return value


class _Upload:
    """A file being written under ``<data dir>/imports/uploads`` with its SHA-256."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"upload-{secrets.token_hex(8)}.part"
        self.file = self.path.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0

    async def take(self, stream: Any) -> None:
        while chunk := await stream.read(CHUNK):
            self.digest.update(chunk)
            self.size += len(chunk)
            await asyncio.to_thread(self.file.write, chunk)

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _spawn(services: Any, site: Site, source: str, path: Path, file_name: str) -> None:
    """Run ``littlestats import`` on the upload in a process of its own (reaped by a thread)."""
    settings = services.settings
    proc = subprocess.Popen(
        [sys.executable, "-m", "littlestats", "import", source, str(path), "--site", site.id,
         "--file-name", file_name, "--remove-file", "--data-dir", str(settings.data_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=proc.wait, name="import-reaper", daemon=True).start()


class ImportsResource:
    """``GET`` (the site's imports) and ``POST`` (upload one) on ``/api/v2/sites/{site}/imports``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        records = _store(self.services).list(found.id)
        json_response(resp, {"siteId": found.id, "imports": [r.public() for r in records]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        folder = self.services.settings.data_dir / "imports" / "uploads"
        upload = _Upload(folder)
        try:
            source, file_name = await self._receive(req, upload)
        except BaseException:
            upload.discard()
            raise
        upload.close()
        if upload.size == 0:
            upload.discard()
            raise falcon.HTTPBadRequest(description="the uploaded file is empty")
        store = _store(self.services)
        record = prepare(store, found, source, upload.path, file_name,
                         digest=(upload.digest.hexdigest(), upload.size))
        if record.status == "done":
            upload.discard()
            json_response(resp, {"import": record.public(), "alreadyImported": True,
                                 "message": f"{record.file_name} was already imported as"
                                            f" {record.id}: nothing to do"})
            return
        target = folder / f"{record.id}.upload"
        try:
            with exclusive(self.services.settings, record.id):
                os.replace(upload.path, target)
        except ImportRefused:
            upload.discard()  # the same file is being imported right now
            json_response(resp, {"import": record.public()}, status=falcon.HTTP_202)
            return
        _spawn(self.services, found, source, target, record.file_name)
        json_response(resp, {"import": record.public()}, status=falcon.HTTP_202)

    async def _receive(self, req: falcon.asgi.Request, upload: _Upload) -> tuple[str, str]:
        """Stream the body into ``upload``; ``(source, file name)``."""
        content_type = (req.content_type or "").lower()
        if content_type.startswith("multipart/form-data"):
            source = req.get_param("source")
            file_name = None
            form = await req.get_media()
            async for part in form:
                if part.name == "source":
                    source = (await part.get_text() or "").strip()
                elif part.name == "file":
                    file_name = part.secure_filename if part.filename else None
                    await upload.take(part.stream)
            if file_name is None and upload.size == 0:
                raise falcon.HTTPBadRequest(description="missing form field 'file' (the export file)")
            return _source(source), file_name or "upload"
        source = _source(req.get_param("source"))
        await upload.take(req.stream)
        return source, req.get_param("filename") or f"upload.{source}"


class ImportResource:
    """``GET`` / ``DELETE`` ``/api/v2/sites/{site}/imports/{import}``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _record(self, found: Site, ident: str) -> Any:
        record = _store(self.services).get(ident)
        if record is None or record.site_id != found.id:
            raise falcon.HTTPNotFound(description=f"no import {ident!r} on this site")
        return record

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str,
                     import_id: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, self._record(found, import_id).public())

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str,
                        import_id: str) -> None:
        _, found = authorize(req, self.services, site)
        record = self._record(found, import_id)
        client = warehouse(self.services)
        try:
            removed = await asyncio.to_thread(delete, self.services.settings, _store(self.services),
                                              record, client)
        except ImportRefused as exc:
            raise falcon.HTTPConflict(description=str(exc)) from None
        except (OSError, ConnectionError, TimeoutError, WarehouseError) as exc:
            raise falcon.HTTPServiceUnavailable(
                description=f"the warehouse is not available to remove the import ({exc}); retry the delete"
            ) from None
        json_response(resp, {"id": import_id, "deleted": True, "removed": removed})

