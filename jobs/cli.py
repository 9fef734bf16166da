"""Warehouse jobs by hand: ``littlestats load | backfill | reaggregate | retention``.

When ``littlestats serve`` runs, its warehouse process holds the DuckDB file, so these commands
ask it to do the work over its socket; otherwise they open the file here and show progress.
Heavy modules are imported inside the commands to keep ``littlestats --help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import click

from littlestats.cli import data_dir_option, settings_from


def _daemon(settings: Any) -> Any:
    from warehouse.client import WarehouseClient

    client = WarehouseClient(settings, timeout=3600)
    return client if client.available() else None


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    # progress on stderr: stdout carries only the summary, for scripts
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _via_daemon(client: Any, request: dict[str, Any], label: str) -> str:
    from rich.console import Console

    with Console(stderr=True).status(f"{label} (in the running warehouse process)…"):
        answer = client.call(request)
    return str(answer["summary"])


def _local(settings: Any) -> Any:
    import click

    from warehouse.service import Warehouse
    from warehouse.tables import SchemaError

    try:
        return Warehouse(settings)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from exc


def _run_load(data_dir: Path | None, start: date | None, end: date | None, label: str) -> None:
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client = _daemon(settings)
    if client is not None:
        request = {"op": "load", "start": start.isoformat() if start else None,
                   "end": end.isoformat() if end else None}
        click.echo(f"{label}: {_via_daemon(client, request, label)}")
        return
    wh = _local(settings)
    try:
        with _progress(f"{label} (events)") as progress:
            result = wh.load(start, end, progress=progress)
    finally:
        wh.close()
    click.echo(f"{label}: {result.summary()}")


@click.command()
@data_dir_option
def load(data_dir: Path | None) -> None:
    """Seal finished WAL segments and load every new raw Parquet file now (exactly once)."""
    _run_load(data_dir, None, None, "load")


@click.command()
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First UTC date (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last UTC date, inclusive.")
@data_dir_option
def backfill(start: Any, end: Any, data_dir: Path | None) -> None:
    """Load raw Parquet partitions dated FROM..TO that are not loaded yet (e.g. restored files)."""
    if end < start:
        raise click.BadParameter("--to is before --from")
    _run_load(data_dir, start.date(), end.date(), "backfill")


@click.command()
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First UTC date (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last UTC date, inclusive.")
@data_dir_option
def reaggregate(start: Any, end: Any, data_dir: Path | None) -> None:
    """Rebuild the pre-aggregates of UTC dates FROM..TO from the fact tables."""
    if end < start:
        raise click.BadParameter("--to is before --from")
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client = _daemon(settings)
    if client is not None:
        request = {"op": "reaggregate", "start": start.date().isoformat(), "end": end.date().isoformat()}
        click.echo(f"reaggregate: {_via_daemon(client, request, 'reaggregate')}")
        return
    wh = _local(settings)
    try:
        with _progress("reaggregate (days)") as progress:
            days = (end.date() - start.date()).days + 1
            progress(0, days)
            hours, visitor_days = wh.reaggregate(start.date(), end.date())
            progress(days, days)
    finally:
        wh.close()
    click.echo(f"reaggregate: rebuilt {hours} hours and {visitor_days} visitor-days")


@click.command()
@data_dir_option
def retention(data_dir: Path | None) -> None:
    """Remove raw Parquet and facts older than each site's retention; prune old pre-aggregates."""
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client = _daemon(settings)
    if client is not None:
        click.echo(f"retention: {_via_daemon(client, {'op': 'retention'}, 'retention')}")
        return
    wh = _local(settings)
    try:
        with _progress("retention (sites)") as progress:
            progress(0, 1)
            result = wh.retention()
            progress(1, 1)
    finally:
        wh.close()
    click.echo(f"retention: {result.summary()}")


COMMANDS = [load, backfill, reaggregate, retention]
