"""``littlestats export`` (a site's data out) and ``littlestats sql`` (analysts' read-only SQL).

Both work while ``littlestats serve`` runs: the raw export reads the raw Parquet files, and a query
goes to the running warehouse process (``warehouse.sql``); with no server running it opens the
warehouse file read-only here. See docs/export.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from littlestats.cli_options import data_dir_option, settings_from, site_of
from littlestats.config import Settings


@contextlib.contextmanager
def _bar(what: str = "export (hours)") -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # progress on stderr: stdout carries only the summary, for scripts
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[events]:,} events"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=None, events=0)

        def update(done: int, total: int, events: int) -> None:
            bar.update(task, completed=done, total=total, events=events)

        yield update


def _range(site_tz: str, start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    from warehouse.query.model import QueryError, parse_date_range

    if start is None and end is None:
        return None, None
    try:
        period = parse_date_range(site_tz, start=start, end=end)
    except QueryError as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.param}") from None
    return period.start, period.end


@click.command("export")
@click.option("--site", "site_ref", required=True, help="Site id or domain key.")
@click.option("--format", "fmt", type=click.Choice(["plausible", "raw"]), default="plausible", show_default=True,
              help="plausible: a zip in Plausible CE's CSV export layout; raw: the raw events as Parquet, "
                   "Hive-partitioned.")
@click.option("--raw", "raw_flag", is_flag=True, help="The same as --format raw.")
@click.option("--start", default=None, help="First day (site-local ISO date) or datetime; needs --end.")
@click.option("--end", default=None, help="Last day (inclusive) or datetime (exclusive); needs --start.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="raw: a directory (created); plausible: the .zip file to write.")
@data_dir_option
def export_command(site_ref: str, fmt: str, raw_flag: bool, start: str | None, end: str | None, out: Path,
                   data_dir: Path | None) -> None:
    """Export a site's data: raw events for analysts, or a zip for Plausible."""
    settings = settings_from(data_dir=data_dir)
    site = site_of(site_ref, settings=settings)
    lo, hi = _range(site.timezone, start, end)
    if raw_flag or fmt == "raw":
        from interop.export_raw import write_hive

        if out.exists() and not out.is_dir():
            raise click.BadParameter(f"{out} is a file; give a directory", param_hint="--out")
        with _bar() as progress:
            result = write_hive(settings.raw_dir, site.id, out, lo, hi, progress)
        click.echo(f"exported {result.summary()} to {out}")
        return
    _plausible_zip(settings, site, start, end, out)


def _plausible_zip(settings: Any, site: Any, start: str | None, end: str | None, out: Path) -> None:
    """A zip in Plausible CE's layout (``interop.plausible_export``), from the running warehouse
    process or from the file when no server runs."""
    from datetime import date

    from interop.plausible_export import export_zip
    from jobs.cli import _owner, explain

    days = []
    for name, value in (("start", start), ("end", end)):
        try:
            days.append(date.fromisoformat(value) if value else None)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an ISO date (YYYY-MM-DD)", param_hint=f"--{name}") from None
    if out.is_dir():
        raise click.BadParameter(f"{out} is a directory; give the .zip file to write", param_hint="--out")
    client, wh = _owner(settings)
    try:
        with _bar("export (files × months)") as progress:
            result = export_zip(client if client is not None else wh, site.id, site.timezone,
                                days[0], days[1], out, lambda done, total: progress(done, total, 0))
    except ValueError as exc:
        raise click.ClickException(f"export failed: {exc}: give --start and --end for an empty export") from None
    except Exception as exc:
        raise click.ClickException(explain(exc, "export", settings.data_dir)) from None
    finally:
        if wh is not None:
            wh.close()
    click.echo(f"exported {result.summary()} to {out}")


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file instead of standard output (required for parquet).")
@click.option("--max-rows", type=click.IntRange(min=1), default=None, help="At most this many rows.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop the query after this many seconds.")
@data_dir_option
def sql_command(query: str, fmt: str, out: Path | None, max_rows: int | None, time_limit: float | None,
                data_dir: Path | None) -> None:
    """Run one read-only SQL query over the warehouse tables (docs/schema.md), even while
    `littlestats serve` runs. QUERY is the SQL text, or - to read it from standard input."""
    from warehouse.client import WarehouseClient
    from warehouse.protocol import WarehouseError
    from warehouse.sql import SqlAnswer, SqlFailed, SqlRefused, SqlTimeLimit, run_readonly

    settings = settings_from(data_dir=data_dir)
    if query == "-":
        query = sys.stdin.read()
    if fmt == "parquet" and out is None:
        raise click.BadParameter("Parquet is binary: give --out FILE", param_hint="--out")
    rows = min(max_rows or settings.sql_max_rows, settings.sql_max_rows)
    limit = min(time_limit or settings.sql_time_limit_seconds, settings.sql_time_limit_seconds)
    client = WarehouseClient(settings, timeout=limit + 60)
    try:
        if client.available():
            answer: SqlAnswer = client.sql_sync(query, None, time_limit=limit, max_rows=rows)
        else:
            answer = _run_here(settings, query, rows, limit, run_readonly)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    except (SqlRefused, SqlFailed, SqlTimeLimit) as exc:
        raise click.ClickException(str(exc)) from None
    _write(answer, fmt, out)
    if answer.truncated:
        click.echo(f"(only the first {answer.table.num_rows:,} rows: raise --max-rows up to the server's "
                   f"sql_max_rows, {settings.sql_max_rows:,})", err=True)


def _run_here(settings: Settings, query: str, rows: int, limit: float, run: Any) -> Any:
    import duckdb

    from warehouse.database import connect

    if not settings.warehouse_db.exists():
        raise click.ClickException(f"no warehouse at {settings.warehouse_db} yet: run `littlestats load` "
                                   "or start `littlestats serve`")
    try:
        con = connect(settings.warehouse_db, read_only=True)
    except duckdb.IOException as exc:
        raise click.ClickException(f"the warehouse is held by another process and its service does not "
                                   f"answer ({exc}); retry in a few seconds") from None
    try:
        return run(con, query, None, time_limit=limit, max_rows=rows)
    finally:
        con.close()


def _write(answer: Any, fmt: str, out: Path | None) -> None:
    import pyarrow as pa

    table: pa.Table = answer.table
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert out is not None
        fields = [pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in table.schema]
        pq.write_table(table.cast(pa.schema(fields)), out, compression="zstd")
        click.echo(f"wrote {table.num_rows:,} rows to {out}", err=True)
        return
    text = _render(table, fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8", newline="")
        click.echo(f"wrote {table.num_rows:,} rows to {out}", err=True)


def _render(table: Any, fmt: str) -> str:
    from api.sql import python_rows

    rows = python_rows(table)
    if fmt == "csv":
        from api.export import csv_chunks

        return b"".join(csv_chunks(table.column_names, rows)).decode()
    if fmt == "json":
        import orjson

        from api.sql import _json_default

        data = [dict(zip(table.column_names, r, strict=True)) for r in rows]
        return orjson.dumps(data, default=_json_default, option=orjson.OPT_INDENT_2).decode() + "\n"
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    grid = Table(*table.column_names)
    for r in rows:
        grid.add_row(*("" if v is None else str(v) for v in r))
    buf = StringIO()
    Console(file=buf, width=200, force_terminal=False).print(grid)
    return buf.getvalue() + f"({len(rows):,} rows)\n"


COMMANDS = [export_command, sql_command]
