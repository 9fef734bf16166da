"""Warehouse jobs by hand: ``littlestats load | backfill | reaggregate | retention``.

``load`` first has running workers rotate their active WAL segments (``ingest.rotation``), so it
loads every event accepted before it started. When ``littlestats serve`` runs, its warehouse
process holds the DuckDB file, so these commands ask it to do the work over its socket; otherwise
they open the file here and show progress.
Heavy modules are imported inside the commands to keep ``littlestats --help`` fast.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import click

from littlestats.cli_options import data_dir_option, settings_from


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from or while handling (a failed rollback hides the
    error that made the load fail), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(exc: BaseException, command: str, data_dir: Path | None = None) -> str:
    """One line for the operator: what went wrong, and what to do next."""
    where = f" of {data_dir}" if data_dir else ""
    retry = f"run `littlestats {command}` again: it resumes where it stopped and nothing accepted is lost"
    from littlestats.disk import is_disk_full

    for cause in _causes(exc):
        if is_disk_full(cause):
            return f"{command} failed: no space left on the disk{where} (ENOSPC). Free some space, then {retry}."
        if "could not set lock" in str(cause).lower():
            return (f"{command} failed: the warehouse file is held by another process ({_first_line(cause)}). "
                    f"Wait for it to finish (or stop it), then {retry}.")
    from warehouse.protocol import WarehouseError

    if isinstance(exc, WarehouseError):
        return (f"{command} failed in the running warehouse process: {_first_line(exc)}. "
                f"Its log has the details; fix the cause, then {retry}.")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return (f"{command} failed: the running warehouse process did not answer ({_first_line(exc)}). "
                f"Check that `littlestats serve` is healthy, then {retry}.")
    return f"{command} failed: {type(exc).__name__}: {_first_line(exc)}. Fix the cause, then {retry}."


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def job_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Any failure of a job command as one line on stderr and exit status 1, not a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise click.ClickException(explain(exc, command.__name__, kwargs.get("data_dir"))) from None

    return run


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
    _warn_late(answer.get("late_segments") or [])
    return str(answer["summary"])


def _warn_late(late: list[Any]) -> None:
    if late:
        click.echo(f"warning: {len(late)} active WAL segments were not rotated in time (a worker"
                   " stopped or overloaded); their events are loaded after their own rotation, by the"
                   " next load", err=True)


def _server_running(settings: Any) -> bool:
    """Whether a ``littlestats serve`` runs on this data directory: its gunicorn answers on the
    control socket under ``run/`` (a file left by a killed server refuses the connection)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(settings.run_dir / "gunicorn.ctl"))
        except OSError:
            return False
    return True


def _owner(settings: Any) -> tuple[Any, Any]:
    """``(client, None)`` when a warehouse process answers, else ``(None, warehouse)`` opened here.

    While a ``littlestats serve`` runs, its warehouse process owns the database: if it is still
    starting, this waits for it (opening the file here would only delay it). While another job
    holds the database, this waits for it to finish. Either wait lasts up to ``job_wait_seconds``.
    """
    import duckdb

    from jobs.daemon import warehouse_type
    from warehouse.tables import SchemaError

    deadline = time.monotonic() + settings.job_wait_seconds
    said = ""
    while True:
        client = _daemon(settings)
        if client is not None:
            return client, None
        if _server_running(settings):
            waiting = "the running server's warehouse process to start"
            problem = (f"`littlestats serve` runs, but its warehouse process does not answer on"
                       f" {settings.warehouse_socket}; see the server's log")
        else:
            try:
                return None, warehouse_type(settings)(settings)
            except SchemaError as exc:
                raise click.ClickException(str(exc)) from exc
            except duckdb.IOException as exc:
                if "could not set lock" not in str(exc).lower():
                    raise  # not another holder (a full disk, say): nothing to wait for
                waiting = "another process to let go of the warehouse database"
                problem = (f"the warehouse file is held by another process ({settings.warehouse_db}:"
                           f" {_first_line(exc)}); run this again once it has finished")
        if time.monotonic() >= deadline:
            raise click.ClickException(problem)
        if waiting != said:  # once, on stderr: stdout carries only the summary
            click.echo(f"waiting for {waiting}…", err=True)
            said = waiting
        time.sleep(0.5)


def _run_load(data_dir: Path | None, start: date | None, end: date | None, label: str,
              rotate: bool = False) -> None:
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client, wh = _owner(settings)
    if client is not None:
        request = {"op": "load", "start": start.isoformat() if start else None,
                   "end": end.isoformat() if end else None, "rotate": rotate}
        click.echo(f"{label}: {_via_daemon(client, request, label)}")
        return
    try:
        if rotate:  # workers may run without the warehouse process (it stopped)
            _warn_late(wh.rotate_active_segments())
        with _progress(f"{label} (events)") as progress:
            result = wh.load(start, end, progress=progress)
    finally:
        wh.close()
    click.echo(f"{label}: {result.summary()}")


@click.command()
@data_dir_option
@job_errors
def load(data_dir: Path | None) -> None:
    """Load every event accepted so far (exactly once): running workers rotate their active WAL
    segments, every finished segment is sealed, and every new raw Parquet file is loaded."""
    _run_load(data_dir, None, None, "load", rotate=True)


@click.command()
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First UTC date (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last UTC date, inclusive.")
@data_dir_option
@job_errors
def backfill(start: Any, end: Any, data_dir: Path | None) -> None:
    """Load raw Parquet partitions dated FROM..TO that are not loaded yet (e.g. restored files)."""
    if end < start:
        raise click.BadParameter("--to is before --from")
    _run_load(data_dir, start.date(), end.date(), "backfill")


@click.command()
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First UTC date (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last UTC date, inclusive.")
@data_dir_option
@job_errors
def reaggregate(start: Any, end: Any, data_dir: Path | None) -> None:
    """Rebuild the pre-aggregates of UTC dates FROM..TO from the fact tables."""
    if end < start:
        raise click.BadParameter("--to is before --from")
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client, wh = _owner(settings)
    if client is not None:
        request = {"op": "reaggregate", "start": start.date().isoformat(), "end": end.date().isoformat()}
        click.echo(f"reaggregate: {_via_daemon(client, request, 'reaggregate')}")
        return
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
@job_errors
def retention(data_dir: Path | None) -> None:
    """Remove raw Parquet and facts older than each site's retention; prune old pre-aggregates."""
    settings = settings_from(data_dir=data_dir)
    settings.ensure_dirs()
    client, wh = _owner(settings)
    if client is not None:
        click.echo(f"retention: {_via_daemon(client, {'op': 'retention'}, 'retention')}")
        return
    try:
        with _progress("retention (sites)") as progress:
            progress(0, 1)
            result = wh.retention()
            progress(1, 1)
    finally:
        wh.close()
    click.echo(f"retention: {result.summary()}")


COMMANDS = [load, backfill, reaggregate, retention]
