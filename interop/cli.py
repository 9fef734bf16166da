"""``littlestats import SOURCE FILE --site …`` and ``littlestats imports list | delete``.

While ``littlestats serve`` runs, its warehouse process owns the DuckDB file: the import writes raw
Parquet beside live traffic's and asks that process to load it (and, for a delete, to remove it);
otherwise the warehouse is opened here. Progress (rows/s and %) goes to stderr, the summary to
stdout.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from littlestats.cli_options import data_dir_option, echo_json, settings_from, site_of


class _Bar:
    """Progress on stderr: percent of the file read and rows per second."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.started = time.monotonic()
        self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                                 TimeElapsedColumn(), console=Console(stderr=True))
        self.task = self.progress.add_task(label, total=100.0, rate="")

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, record: Any) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, completed=record.public()["progress"] * 100,
                             rate=f"{record.rows_read:,} rows, {record.rows_read / elapsed:,.0f} rows/s")


def _first_native(client: Any, wh: Any, site_id: str) -> datetime | None:
    from interop.imports import FIRST_NATIVE_SQL

    if client is not None:
        client.call({"op": "load", "rotate": True})  # native events still in the log count too
        return client.query_sync(FIRST_NATIVE_SQL, [site_id]).scalar()  # type: ignore[no-any-return]
    wh.load()
    rows = wh.query_arrow(FIRST_NATIVE_SQL, [site_id]).to_pylist()
    return next(iter(rows[0].values())) if rows else None


def _load(client: Any, wh: Any) -> str:
    if client is not None:
        return str(client.call({"op": "load"})["summary"])
    return str(wh.load().summary())


@click.command("import")
@click.argument("source", type=click.Choice(["littlestats-v2", "littlestats-v1", "goatcounter",
                                             "umami", "plausible"]))
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--site", "site_ref", required=True, help="Site to import into (id or domain key).")
@click.option("--source-site", default=None,
              help="Which site of the file, when it holds several (its domain or id).")
@click.option("--file-name", default=None, hidden=True, help="Name to record (uploads).")
@click.option("--remove-file", is_flag=True, hidden=True, help="Delete FILE when done (uploads).")
@click.option("--batch-events", type=click.IntRange(1), default=None, hidden=True,
              help="Events per written batch and checkpoint (tests).")
@data_dir_option
def import_command(source: str, file: Path, site_ref: str, source_site: str | None,
                   file_name: str | None, remove_file: bool, batch_events: int | None,
                   data_dir: Path | None) -> None:
    """Import another tool's history from FILE into a site (docs/import.md). Importing the same
    file again does nothing; an import that stopped midway resumes."""
    from interop.events import ImportFormatError
    from interop.imports import BATCH_EVENTS, ImportRefused, cutoff_for, prepare, run
    from interop.records import ImportStore
    from jobs.cli import _owner, explain

    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    site = site_of(site_ref, settings=settings)
    store = ImportStore(settings.control_db)
    try:
        record = prepare(store, site, source, file, file_name)
        if record.status == "done":
            click.echo(f"{record.file_name} was already imported into {site.domain} as {record.id}"
                       f" ({record.events_written:,} events, {record.finished_at}): nothing to do")
            return
        if record.batches_done:
            click.echo(f"resuming import {record.id} after batch {record.batches_done}", err=True)
        client, wh = _owner(settings)
        try:
            cutoff = cutoff_for(_first_native(client, wh, site.id) if record.cutoff is None else None)
            with _Bar(f"import {source}") as bar:
                done = run(settings, store, record, site, file, cutoff,
                           {"source_site": source_site}, progress=bar,
                           batch_events=batch_events or BATCH_EVENTS)
            loaded = _load(client, wh)
        finally:
            if wh is not None:
                wh.close()
    except (ImportFormatError, ImportRefused) as exc:
        raise click.ClickException(f"import failed: {exc}") from None
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(explain(exc, "import", data_dir)) from None
    finally:
        store.close()
        if remove_file:
            file.unlink(missing_ok=True)
    skipped = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sorted(done.skipped.items()))
    click.echo(f"imported {done.events_written:,} events from {done.file_name} into {site.domain}"
               f" as {done.id} ({done.rows_read:,} rows read"
               + (f"; skipped: {skipped}" if skipped else "") + ")")
    if done.skipped.get("overlap_with_live"):
        click.echo(f"events from {done.cutoff} on were skipped: the site has live traffic from then"
                   " (docs/import.md)")
    click.echo(f"load: {loaded}")


@click.group()
def imports() -> None:
    """List and delete imports."""


@imports.command("list")
@click.option("--site", "site_ref", default=None, help="Only this site's (id or domain key).")
@data_dir_option
def imports_list(site_ref: str | None, data_dir: Path | None) -> None:
    """Print the imports (with their progress) as JSON."""
    from interop.records import ImportStore

    settings = settings_from(data_dir=data_dir)
    site_id = site_of(site_ref, settings=settings).id if site_ref else None
    store = ImportStore(settings.control_db)
    try:
        echo_json({"imports": [r.public() for r in store.list(site_id)]})
    finally:
        store.close()


@imports.command("delete")
@click.argument("import_id")
@data_dir_option
def imports_delete(import_id: str, data_dir: Path | None) -> None:
    """Delete an import: its events, and the visits and pre-aggregates they were part of."""
    from interop.imports import ImportRefused, delete
    from interop.records import ImportStore
    from jobs.cli import _owner, explain

    settings = settings_from(data_dir=data_dir)
    store = ImportStore(settings.control_db)
    try:
        record = store.get(import_id)
        if record is None:
            raise click.ClickException(f"no import {import_id!r} (`littlestats imports list`)")
        client, wh = _owner(settings)
        try:
            removed = delete(settings, store, record, client, wh)
        finally:
            if wh is not None:
                wh.close()
    except ImportRefused as exc:
        raise click.ClickException(str(exc)) from None
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(explain(exc, f"imports delete {import_id}", data_dir)) from None
    finally:
        store.close()
    click.echo(f"deleted import {import_id}: {removed}")


COMMANDS = [import_command, imports]
