"""``littlestats backup DEST`` and ``littlestats restore SRC --data-dir NEW`` (``littlestats.backup``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from littlestats.backup import Progress, backup, restore
from littlestats.cli_options import data_dir_option, settings_from


@contextlib.contextmanager
def _bar() -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    # on stderr: stdout carries only the summary, for scripts
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def _mb(manifest: dict[str, Any]) -> str:
    return f"{sum(f['size'] for f in manifest['files']) / 1e6:,.1f} MB"


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@data_dir_option
def backup_command(dest: Path, data_dir: Path | None) -> None:
    """Back the data directory up into DEST (a new or empty directory), while it runs.

    Control plane, warehouse, raw Parquet and write-ahead log, with a manifest of checksums.
    Every event acknowledged before the backup began is in it.
    """
    from warehouse.client import WarehouseClient

    settings = settings_from(data_dir=data_dir)
    client = WarehouseClient(settings, timeout=3600)
    live = client.available()
    with _bar() as progress:
        manifest = backup(settings, dest, progress, client if live else None)
    contents = manifest["contents"]
    click.echo(
        f"backup: {len(manifest['files'])} files, {_mb(manifest)} in {dest}"
        f" ({'from the running server' if live else 'offline'}): {contents['warehouseEvents']:,} events"
        f" loaded, {contents['rawFiles']} raw files, {contents['walRecords']:,} events in"
        f" {contents['walSegments']} WAL segments"
    )


@click.command("restore")
@click.argument("src", type=click.Path(path_type=Path, file_okay=False, exists=True))
@data_dir_option
def restore_command(src: Path, data_dir: Path | None) -> None:
    """Restore the backup in SRC into a new or empty data directory (--data-dir), verifying it."""
    settings = settings_from(data_dir=data_dir)
    with _bar() as progress:
        manifest = restore(src, settings.data_dir, progress)
    click.echo(
        f"restore: {len(manifest['files'])} files, {_mb(manifest)} verified into {settings.data_dir}"
        f" (backup of {manifest['startedAt']}). Start it with `littlestats serve --data-dir"
        f" {settings.data_dir}`: it seals the {manifest['contents']['walRecords']:,} WAL events"
        " and loads what was not loaded yet."
    )


COMMANDS = [backup_command, restore_command]
