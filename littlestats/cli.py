"""The ``littlestats`` command line. Every command takes ``--data-dir`` (or ``LITTLESTATS_DATA_DIR``)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import click

from littlestats import __version__
from littlestats.cli_options import data_dir_option, echo_json, settings_from
from littlestats.config import ConfigError
from littlestats.controlplane import ControlPlane
from littlestats.logs import configure as configure_logging
from littlestats.permissions import use_private_umask


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="littlestats")
def main() -> None:
    """LittleStats: self-hosted, privacy-friendly web analytics."""
    use_private_umask()  # before anything is created: the data directory is for our user only


@main.command()
@data_dir_option
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000).")
@click.option("--workers", type=int, default=None, help="gunicorn worker processes (default 2).")
@click.option("--dev", is_flag=True, default=None, help="Development mode: no authentication, loopback only.")
def serve(data_dir: Path | None, host: str | None, port: int | None, workers: int | None, dev: bool | None) -> None:
    """Run ingest, query API, live feed and scheduled jobs on one machine."""
    settings = settings_from(data_dir=data_dir, host=host, port=port, workers=workers, dev=dev)
    # prometheus_client picks its multiprocess mode when first imported, so this comes first:
    # stale files from a previous run would double-count.
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
    from littlestats.server import serve as run_server

    configure_logging(settings.log_level, settings.log_format)
    try:
        run_server(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        shutil.rmtree(settings.metrics_dir, ignore_errors=True)  # in memory: give it back


@main.group()
def sites() -> None:
    """Create and list sites."""


@sites.command("add")
@click.argument("domain")
@click.option("--name", default=None, help="Display name (default: the domain).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone for reports.")
@click.option("--retention-days", type=int, default=None, help="Days of raw data to keep (0 = forever).")
@data_dir_option
def sites_add(domain: str, name: str | None, timezone: str, retention_days: int | None, data_dir: Path | None) -> None:
    """Create a site and print it as JSON (its `domainKey` goes into the tracker snippet)."""
    from api.validation import validate_domain, validate_timezone  # shared with the API

    settings = settings_from(data_dir=data_dir)
    try:
        domain = validate_domain(domain)
        validate_timezone(timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    store = ControlPlane(settings.control_db)
    retention = settings.default_retention_days if retention_days is None else retention_days
    site = store.create_site(domain, name=name, timezone=timezone, retention_days=retention)
    echo_json(site.public())


@sites.command("list")
@data_dir_option
def sites_list(data_dir: Path | None) -> None:
    """Print every site as JSON."""
    settings = settings_from(data_dir=data_dir)
    store = ControlPlane(settings.control_db)
    echo_json({"sites": [s.public() for s in store.list_sites()]})


@main.command()
@data_dir_option
def seal(data_dir: Path | None) -> None:
    """Seal closed and orphaned write-ahead-log segments into Parquet now."""
    from ingest.seal import seal_all

    settings = settings_from(data_dir=data_dir)
    results = seal_all(settings.wal_dir, settings.raw_dir)
    click.echo(f"sealed {len(results)} segments, {sum(r.events for r in results)} events")


# Commands of later components live beside their code and are registered here.
for _module in ("jobs.cli", "api.cli", "littlestats.backup_cli", "littlestats.export_cli"):
    try:
        for _command in importlib.import_module(_module).COMMANDS:
            main.add_command(_command)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise


if __name__ == "__main__":
    sys.exit(main())
