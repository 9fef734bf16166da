"""``littlestats backup DEST`` and ``littlestats restore SRC --data-dir NEW``.

A backup is a directory laid out like a data directory — ``control.sqlite3``, ``warehouse.duckdb``,
``raw/``, ``wal/`` (plus ``littlestats.toml`` and ``admin-token`` when present) — and a
``manifest.json`` that lists every file with its size and SHA-256, the schema versions and what
the backup holds. It is taken while ingest goes on, and holds every event acknowledged before it
began, exactly once after a restore and the first load. In this order:

1. **Control plane**: SQLite's online backup API copies a consistent snapshot of the live file.
2. **Write-ahead log**: every segment's intact records. A rotated segment keeps its name (sealing
   it again after a restore rewrites the same Parquet file); the records acknowledged so far in an
   active one become a closed segment named ``<segment>-backup``, whose Parquet file is a new one.
   A segment sealed while this runs is in ``raw/`` by the next step.
3. **Raw Parquet and warehouse, frozen together** under the warehouse's write lock, so the load
   manifest (``loaded_files``) and the raw files agree and no compaction or retention runs in
   between: the warehouse is checkpointed and its file copied, and every raw file is hard-linked
   (raw files are never changed once in place, only replaced or deleted). With ``littlestats
   serve`` running, its warehouse process does this (the ``snapshot`` request); otherwise this
   process takes the DuckDB file's lock. Loads wait meanwhile; ingest does not.
4. The frozen files are copied into the backup with their checksums, and the warehouse copy is
   opened and checkpointed on its own, which proves it readable.

Nothing is counted twice after a restore: an event that is both in a copied WAL segment and in a
raw file (it was sealed during step 2 or 3) has one ``event_id``, and the loader skips event ids
it has loaded (``warehouse.load``); the manifest of loaded raw files comes from the same instant
as the raw files themselves.

A restore verifies every file against the manifest while it copies it into a new, empty data
directory (directories mode 700, files 600) and removes what it wrote if anything is wrong. The
next ``littlestats serve`` there seals the restored WAL and loads what was not loaded yet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from littlestats import __version__
from littlestats.config import Settings
from littlestats.controlplane import new_id

log = logging.getLogger("littlestats.backup")

MANIFEST = "manifest.json"
FORMAT = "littlestats-backup"
FORMAT_VERSION = 1
WAREHOUSE_FILES = ("warehouse.duckdb", "warehouse.duckdb.wal")
#: Small files of the data directory copied as they are.
EXTRA_FILES = ("littlestats.toml", "admin-token")
CHUNK = 1 << 20

#: ``progress(phase, done, total)``: bytes of a phase done so far (``total`` ``None``: not known yet).
Progress = Callable[[str, int, int | None], None]


class BackupError(click.ClickException):
    """A backup or restore that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a backup, as the manifest lists it."""

    path: str
    size: int
    sha256: str

    def manifest(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _private_dir(path: Path) -> None:
    """Create ``path`` and any missing parent with mode 700."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)
        os.chmod(p, 0o700)
    if not missing:
        os.chmod(path, 0o700)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Copy ``src`` to a new private file ``dst``; its size and SHA-256."""
    _private_dir(dst.parent)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def _entry(root: Path, path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return FileEntry(path.relative_to(root).as_posix(), path.stat().st_size, digest.hexdigest())


def _empty_or_new(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{what} {path} is not empty; name a new or empty directory")


def _remove_contents(path: Path, created: bool) -> None:
    """Undo a failed backup or restore: remove ``path`` if this run created it, else empty it."""
    if created:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# 1. control plane ------------------------------------------------------------------------------
def copy_control_plane(src: Path, dst: Path) -> int:
    """A consistent copy of the live control-plane database (SQLite's online backup); its schema
    version."""
    _private_dir(dst.parent)
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file
        version = int(target.execute("PRAGMA user_version").fetchone()[0])
    finally:
        target.close()
        source.close()
    for leftover in (dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        leftover.unlink(missing_ok=True)
    os.chmod(dst, 0o600)
    return version


# 2. write-ahead log ----------------------------------------------------------------------------
def _records_of(path: Path) -> tuple[Path, Iterator[bytes]] | None:
    """An open segment's records, following a rotation (``.seg`` → ``.closed``) that happened
    since it was listed; ``None`` once it has been sealed (its events are in ``raw/`` now)."""
    from ingest.wal import ACTIVE_SUFFIX, CLOSED_SUFFIX, read_records

    candidates = [path]
    if path.suffix == ACTIVE_SUFFIX:
        candidates.append(path.with_suffix(CLOSED_SUFFIX))
    for candidate in candidates:
        records = read_records(candidate)
        try:
            first = next(records)
        except FileNotFoundError:
            continue
        except StopIteration:
            return candidate, iter(())

        def chained(first: bytes = first, rest: Iterator[bytes] = records) -> Iterator[bytes]:
            yield first
            yield from rest

        return candidate, chained()
    return None


def copy_wal(wal_dir: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Every segment's intact records into ``dst`` as closed segments; (segments, records)."""
    from ingest.wal import ACTIVE_SUFFIX, CLOSED_SUFFIX, encode_record, sealable_segments

    _private_dir(dst)
    segments = records = 0
    for listed in sealable_segments(wal_dir):
        found = _records_of(listed)
        if found is None:
            continue
        path, payloads = found
        stem = path.name.rsplit(".", 1)[0]
        name = f"{stem}-backup{CLOSED_SUFFIX}" if path.suffix == ACTIVE_SUFFIX else path.name
        count = 0
        fd = os.open(dst / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=CHUNK) as out:
            for payload in payloads:
                record = encode_record(payload)
                out.write(record)
                count += 1
                if on_bytes:
                    on_bytes(len(record))
            out.flush()
            os.fsync(out.fileno())
        if count:
            segments += 1
            records += count
        else:
            (dst / name).unlink()
    return segments, records


# 3. raw + warehouse, frozen together -----------------------------------------------------------
def freeze(con: Any, settings: Settings, staging: Path) -> dict[str, int]:
    """Copy the warehouse file and hard-link every raw Parquet file into ``staging``.

    The caller holds the warehouse's write lock (``con`` is its writing connection, or ``None``
    when there is no warehouse file), so nothing changes the warehouse or removes a raw file
    meanwhile. Raw files are linked (copied only across file systems): instant, whatever their size.
    """
    from warehouse.load import discover_files

    _private_dir(staging)
    copied = 0
    if con is not None:
        try:
            con.execute("CHECKPOINT")
        except Exception as exc:  # the log is copied beside the file instead
            log.warning("backup: warehouse checkpoint failed (%s); copying its log too", exc)
        for name in WAREHOUSE_FILES:
            src = settings.data_dir / name
            if src.exists():
                shutil.copyfile(src, staging / name)
                copied += 1
    linked = 0
    for raw in discover_files(settings.raw_dir):
        target = staging / "raw" / raw.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(raw.path, target)
        except FileNotFoundError:
            continue  # only a site being purged loses files, and it waits for this lock
        except OSError:
            shutil.copyfile(raw.path, target)
        linked += 1
    return {"warehouse_files": copied, "raw_files": linked}


def _staging_dir(settings: Settings) -> Path:
    return settings.run_dir / f"backup-{new_id()}"


def is_staging_dir(settings: Settings, path: Path) -> bool:
    """Whether ``path`` is a place ``freeze`` may write to (the warehouse process checks requests)."""
    return path.parent == settings.run_dir and path.name.startswith("backup-") and not path.exists()


def _freeze_here(settings: Settings, staging: Path) -> dict[str, int]:
    """``freeze`` without a warehouse process: hold the DuckDB file's lock in this process."""
    import duckdb

    db = settings.warehouse_db
    if not db.exists():
        return freeze(None, settings, staging)
    try:
        con = duckdb.connect(str(db))
    except duckdb.IOException as exc:
        raise BackupError(
            f"{db} is held by another process ({exc}). If `littlestats serve` runs, its warehouse"
            " process is not answering yet: retry in a minute. If a `littlestats load` or"
            " `backfill` runs, retry when it has finished."
        ) from None
    try:
        return freeze(con, settings, staging)
    finally:
        con.close()


def _settle_warehouse_copy(path: Path) -> tuple[int, int]:
    """Checkpoint the staged warehouse copy into one file and read it back: (schema version,
    events). Proves the copy opens."""
    import duckdb

    from warehouse.migrations import schema_version

    con = duckdb.connect(str(path))
    try:
        con.execute("CHECKPOINT")
        version = schema_version(con)
        has_events = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name"
                                 " = 'events'").fetchall()[0][0]
        events = con.execute("SELECT count(*) FROM events").fetchall()[0][0] if has_events else 0
    finally:
        con.close()
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    return version, int(events)


# the whole backup ------------------------------------------------------------------------------
def backup(settings: Settings, dest: Path, progress: Progress | None = None,
           warehouse: Any = None) -> dict[str, Any]:
    """Back the data directory of ``settings`` up into ``dest`` (new or empty); the manifest.

    ``warehouse`` is a ``WarehouseClient`` of the running warehouse process, or ``None`` to work
    on the directory directly.
    """
    if not settings.data_dir.is_dir():
        raise BackupError(f"there is no data directory {settings.data_dir}; pass --data-dir")
    _empty_or_new(dest, "backup destination")
    started = datetime.now(UTC)
    created = not dest.exists()
    _private_dir(dest)
    report = progress or (lambda phase, done, total: None)
    staging = _staging_dir(settings)
    try:
        report("control plane", 0, None)
        control_version = 0
        if settings.control_db.exists():
            control_version = copy_control_plane(settings.control_db, dest / "control.sqlite3")
            size = (dest / "control.sqlite3").stat().st_size
            report("control plane", size, size)
        wal_bytes = 0

        def wal_advance(n: int) -> None:
            nonlocal wal_bytes
            wal_bytes += n
            report("write-ahead log", wal_bytes, None)

        report("write-ahead log", 0, None)
        segments, records = copy_wal(settings.wal_dir, dest / "wal", wal_advance)
        report("write-ahead log", wal_bytes, wal_bytes)
        # No progress inside: the warehouse process answers once the freeze is done.
        report("freeze raw + warehouse", 0, None)
        if warehouse is not None:
            frozen = warehouse.call({"op": "snapshot", "dir": str(staging)}, timeout=3600)
        else:
            frozen = _freeze_here(settings, staging)
        frozen_bytes = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        report("freeze raw + warehouse", frozen_bytes, frozen_bytes)
        warehouse_version = warehouse_events = 0
        if (staging / WAREHOUSE_FILES[0]).exists():
            warehouse_version, warehouse_events = _settle_warehouse_copy(staging / WAREHOUSE_FILES[0])
        for name in EXTRA_FILES:
            if (settings.data_dir / name).is_file():
                shutil.copyfile(settings.data_dir / name, staging / name)
        staged = sorted(p for p in staging.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in staged)
        done = 0
        report("copy", 0, total)
        files: list[FileEntry] = []
        for path in staged:
            rel = path.relative_to(staging)

            def advance(n: int) -> None:
                nonlocal done
                done += n
                report("copy", done, total)

            size, digest = _copy(path, dest / rel, advance)
            files.append(FileEntry(rel.as_posix(), size, digest))
        for path in sorted([dest / "control.sqlite3", *(dest / "wal").glob("*")]):
            if path.is_file():
                files.append(_entry(dest, path))
    except BaseException:
        _remove_contents(dest, created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "littlestatsVersion": __version__,
        "startedAt": started.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "live": warehouse is not None,
        "schema": {"control": control_version, "warehouse": warehouse_version},
        "contents": {"warehouseEvents": warehouse_events, "rawFiles": int(frozen["raw_files"]),
                     "walSegments": segments, "walRecords": records},
        "files": [f.manifest() for f in sorted(files, key=lambda f: f.path)],
    }
    tmp = dest / f".{MANIFEST}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest / MANIFEST)  # last: a backup without its manifest is incomplete
    _fsync(dest)
    return manifest


# restore ---------------------------------------------------------------------------------------
def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of the backup in ``src``, checked to be one this version can restore."""
    from littlestats.migrations import LATEST as CONTROL_LATEST
    from warehouse.migrations import LATEST as WAREHOUSE_LATEST

    path = src / MANIFEST
    if not path.is_file():
        raise BackupError(f"{src} has no {MANIFEST}: it is not a LittleStats backup, or the backup"
                          " did not finish. Take a new one with `littlestats backup`.")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BackupError(f"{path} is not valid JSON ({exc}); the backup is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a LittleStats backup manifest")
    if manifest.get("formatVersion", 0) > FORMAT_VERSION:
        raise BackupError(f"{src} was made by LittleStats {manifest.get('littlestatsVersion')}, whose"
                          " backup format this version cannot read: upgrade LittleStats to restore it")
    schema = manifest.get("schema", {})
    if schema.get("control", 0) > CONTROL_LATEST or schema.get("warehouse", 0) > WAREHOUSE_LATEST:
        raise BackupError(
            f"{src} holds schema versions {schema} from LittleStats {manifest.get('littlestatsVersion')};"
            f" this version knows up to control {CONTROL_LATEST}, warehouse {WAREHOUSE_LATEST}."
            " Upgrade LittleStats to restore it."
        )
    for entry in manifest.get("files", []):
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise BackupError(f"{path} lists {entry['path']!r}, outside the backup: refusing it")
    return manifest


def restore(src: Path, data_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Copy the backup in ``src`` into the new or empty ``data_dir``, verifying every file."""
    manifest = read_manifest(src)
    _empty_or_new(data_dir, "data directory")
    report = progress or (lambda phase, done, total: None)
    entries = manifest["files"]
    total = sum(int(e["size"]) for e in entries)
    created = not data_dir.exists()
    _private_dir(data_dir)
    done = 0
    try:
        report("restore", 0, total)
        for entry in entries:
            source = src / entry["path"]
            if not source.is_file():
                raise BackupError(f"{source} is missing from the backup (the manifest lists it)")

            def advance(n: int) -> None:
                nonlocal done
                done += n
                report("restore", done, total)

            size, digest = _copy(source, data_dir / entry["path"], advance)
            if size != entry["size"] or digest != entry["sha256"]:
                raise BackupError(
                    f"{source} does not match the manifest ({size} bytes, sha256 {digest[:12]}…;"
                    f" expected {entry['size']} bytes, {entry['sha256'][:12]}…): the backup is"
                    " damaged. Restore from another backup."
                )
        for sub in ("raw", "wal"):
            _private_dir(data_dir / sub)
        _fsync(data_dir)
    except BaseException:
        _remove_contents(data_dir, created)
        raise
    return manifest
