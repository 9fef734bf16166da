"""Plausible CE's CSV export, in and out: import its daily aggregates, export ours in its layout.

Import reads the files like Plausible's own CSV importer (``interop.plausible_layout``) through
named steps — ``open_files`` (a zip, a folder or CSV files) → ``read_rows`` (header by name, each
field parsed and checked; anything malformed stops the import with its file, line and column) →
``to_table_row`` (our vocabulary: null for unknown, ``Direct / None``, lower-case devices) →
``stage`` (one Parquet file per table under the data directory) → the warehouse process stores
the staged rows in place of the import's earlier ones (``warehouse.imported``), so an import id
imported twice counts once. The rows stay daily aggregates: the query engine adds them to answers
when asked (``imported=true``; ``warehouse.query.imported``).

Export (``export_zip``, in ``interop.plausible_export``) writes a site's facts in the same layout.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from interop.events import ImportFormatError
from interop.plausible_export import export_zip
from interop.plausible_layout import RENAMED, REQUIRED, kind, parse_file_name
from littlestats.config import Settings
from warehouse.imported import BY_NAME, staged_columns, staging_dir

__all__ = ["ImportResult", "PlausibleFormatError", "delete_import", "export_zip", "import_zip"]

Progress = Callable[[int, int], None]
DIRECT = "Direct / None"
BATCH_ROWS = 50_000
_MAX_INT = (1 << 63) - 1
_NOT_NULL = {"page", "entry_page", "exit_page", "name"}
_ARROW = {"DATE": pa.date32(), "VARCHAR": pa.string(), "BIGINT": pa.int64()}


class PlausibleFormatError(ImportFormatError):
    """A file that is not Plausible's CSV layout; the message names file, line and column."""

    def __init__(self, file: str, message: str, line: int | None = None, column: str | None = None) -> None:
        super().__init__(file, line, repr(column) if column else None, message)


@dataclass
class ImportResult:
    """What an import stored."""

    import_id: str
    site_id: str
    rows: dict[str, int] = field(default_factory=dict)
    outside_range: int = 0  # rows dated outside their file name's range (not imported)
    first: date | None = None
    last: date | None = None

    def summary(self) -> str:
        span = f" ({self.first} .. {self.last})" if self.first else ""
        skipped = f"; {self.outside_range:,} rows outside their file's dates skipped" if self.outside_range else ""
        return f"stored {sum(self.rows.values()):,} daily rows in {len(self.rows)} tables{span}{skipped}"


# --- steps ---------------------------------------------------------------------------------


@dataclass
class _Input:
    name: str
    size: int
    open: Callable[[], IO[bytes]]


def open_files(source: str | Path | Sequence[str | Path]) -> list[_Input]:
    """The CSV files of a Plausible export: a zip, a folder of CSV files, or CSV files."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.suffix == ".csv")
        elif zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            return [_Input(i.filename.rsplit("/", 1)[-1], i.file_size, functools.partial(archive.open, i))
                    for i in archive.infolist()
                    if not i.is_dir() and i.filename.endswith(".csv") and "__MACOSX" not in i.filename]
        elif path.exists():
            paths = [path]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    else:
        paths = [Path(p) for p in source]
    return [_Input(p.name, p.stat().st_size, _opener(p)) for p in paths]


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


class _Counted(io.RawIOBase):
    """Counts the bytes read from a stream (for progress)."""

    def __init__(self, raw: IO[bytes], tick: Callable[[int], None]) -> None:
        self.raw, self.tick = raw, tick

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.tick(len(data))
        return len(data)


def _value(file: str, line: int, column: str, text: str, k: str) -> Any:
    if text == "\\N":  # ClickHouse's null: the column's default
        text = ""
    if k == "str":
        return text
    if k == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise PlausibleFormatError(file, f"{text!r} is not a date like 2024-01-31", line, column) from None
    if text == "":
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 18 and int(text) > _MAX_INT:
        raise PlausibleFormatError(file, f"{text!r} is not a whole number of at least 0", line, column)
    return int(text)


def read_rows(item: _Input, table: str, tick: Callable[[int], None]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, {column: value})`` for every data row, columns matched by header name."""
    with item.open() as raw:
        text = io.TextIOWrapper(io.BufferedReader(_Counted(raw, tick)), encoding="utf-8-sig", newline="")
        reader = csv.reader(text, strict=True)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                raise PlausibleFormatError(item.name, "the file is empty; expected a header row", 1)
            header = [h.strip() for h in header]
            renamed = RENAMED.get(table, {})
            for column in REQUIRED[table]:
                if column not in header and column not in renamed.values():
                    raise PlausibleFormatError(item.name, f"the header has no column {column!r} (it has"
                                               f" {', '.join(header)})", 1, column)
            wanted = [(i, name, kind(name)) for i, name in ((i, renamed.get(h, h)) for i, h in enumerate(header))]
            line = reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise PlausibleFormatError(item.name, f"{len(row)} fields, but the header has"
                                                   f" {len(header)}", line)
                    yield line, {name: _value(item.name, line, name, row[i], k) for i, name, k in wanted}
                line = reader.line_num + 1
        except csv.Error as exc:
            raise PlausibleFormatError(item.name, f"not valid CSV ({exc})", line) from None
        except UnicodeDecodeError:
            raise PlausibleFormatError(item.name, "not UTF-8 text", line) from None


def _referrer_domain(referrer: str | None) -> str | None:
    if not referrer:
        return None
    host = urlsplit(referrer if "//" in referrer else "//" + referrer).hostname or ""
    host = host[4:] if host.startswith("www.") else host
    return host or None


@functools.cache
def _columns(table: str) -> tuple[tuple[str, str], ...]:
    return tuple((c, kind(c)) for c in staged_columns(BY_NAME[table]))


def to_table_row(table: str, values: dict[str, Any]) -> dict[str, Any]:
    """One CSV row as a row of our imported table (the staged columns)."""
    out: dict[str, Any] = {}
    for col, k in _columns(table):
        value = values.get(col)
        if col == "referrer_domain":
            value = _referrer_domain(values.get("referrer"))
        elif k == "str":
            value = value or ("" if col in _NOT_NULL else None)
        elif value is None:
            value = 0
        out[col] = value
    if table == "imported_sources" and not out["source"]:
        out["source"] = DIRECT
    if table == "imported_devices" and out["device"]:
        out["device"] = "desktop" if out["device"].lower() == "laptop" else out["device"].lower()
    if table == "imported_pages" and "scroll_depth" in values:  # an export before 2025
        out["total_scroll_depth"] = values["scroll_depth"]
        out["total_scroll_depth_visits"] = values.get("pageleave_visitors", 0)
    return out


class _Stage:
    """Staged rows of one table: a Parquet file written in batches (bounded memory)."""

    def __init__(self, table: str, path: Path) -> None:
        decl = BY_NAME[table]
        self.columns = staged_columns(decl)
        types = {c.name: c.type for c in decl.columns}
        self.schema = pa.schema([(c, _ARROW[types[c]]) for c in self.columns])
        self.path, self.rows = path, 0
        self.batch: list[dict[str, Any]] = []
        self.writer = pq.ParquetWriter(path, self.schema)

    def add(self, row: dict[str, Any]) -> None:
        self.batch.append(row)
        if len(self.batch) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
            self.rows += len(self.batch)
            self.batch = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def stage(files: list[_Input], into: Path, progress: Progress | None = None) -> tuple[dict[str, Path], ImportResult]:
    """Validate every file and stage its rows; the staged files and what they hold."""
    total = sum(f.size for f in files) or 1
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total)

    result = ImportResult("", "")
    stages: dict[str, _Stage] = {}
    try:
        for item in files:
            try:
                table, first, last = parse_file_name(item.name)
            except ValueError as exc:
                raise PlausibleFormatError(item.name, str(exc).split(": ", 1)[-1]) from None
            if table not in stages:
                stages[table] = _Stage(table, into / f"{table}.parquet")
            for _line, values in read_rows(item, table, tick):
                day = values["date"]
                if not first <= day <= last:
                    result.outside_range += 1
                    continue
                stages[table].add(to_table_row(table, values))
                result.first = min(result.first or day, day)
                result.last = max(result.last or day, day)
    finally:
        for s in stages.values():
            s.close()
    result.rows = {name: s.rows for name, s in stages.items()}
    return {name: s.path for name, s in stages.items()}, result


def _on_warehouse(settings: Settings, request: dict[str, Any], local: Callable[[Any], Any]) -> Any:
    """Run ``request`` in the warehouse process when it runs, else ``local(Warehouse)`` here."""
    from warehouse.client import WarehouseClient

    client = WarehouseClient(settings, timeout=3600)
    if client.available():
        return client.call(request)
    from warehouse.service import Warehouse

    wh = Warehouse(settings)
    try:
        return local(wh)
    finally:
        wh.close()


def import_zip(site_id: str, path_or_files: str | Path | Sequence[str | Path], import_id: str,
               progress: Progress | None = None, *, settings: Settings) -> ImportResult:
    """Import a Plausible CE CSV export (a zip, a folder or CSV files) into ``site_id`` as import
    ``import_id``. Idempotent: importing again under the same id replaces the earlier rows.
    Raises ``PlausibleFormatError`` (file, line, column) before anything is stored."""
    files = open_files(path_or_files)
    if not files:
        raise PlausibleFormatError(str(path_or_files), "no CSV files of Plausible's export in it")
    root = staging_dir(settings.run_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    into = root / f"plausible-{os.getpid()}-{hashlib.sha256(import_id.encode()).hexdigest()[:12]}"
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(mode=0o700)
    try:
        staged, result = stage(files, into, progress)
        request = {"op": "import_aggregates", "site_id": site_id, "import_id": import_id,
                   "files": {k: str(v) for k, v in staged.items()}}
        answer = _on_warehouse(settings, request,
                               lambda wh: {"rows": wh.import_aggregates(site_id, import_id, staged)})
    finally:
        shutil.rmtree(into, ignore_errors=True)
    result.import_id, result.site_id, result.rows = import_id, site_id, dict(answer["rows"])
    return result


def delete_import(import_id: str, *, settings: Settings) -> int:
    """Remove the aggregates of ``import_id``; how many rows."""
    answer = _on_warehouse(settings, {"op": "delete_aggregates", "import_id": import_id},
                           lambda wh: {"rows": wh.delete_aggregates(import_id)})
    return int(answer["rows"])
