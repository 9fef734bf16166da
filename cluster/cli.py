"""``littlestats cluster``: set up what several machines share (docs/cluster.md).

``cluster init`` prepares the shared engines named in a node's cluster.toml, one named step at a
time (each says what it did and is safe to run again); ``cluster engines`` runs private engines on
this machine for a trial cluster.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from littlestats.config import ConfigError, Settings, load_settings


@dataclass(frozen=True)
class InitStep:
    """One thing ``cluster init`` sets up: ``run`` does it (or finds it done) and says which."""

    name: str
    run: Callable[[Settings], str]


def create_bucket(settings: Settings) -> str:
    if not settings.s3_endpoint:
        return "skipped: no s3_endpoint"
    from cluster.s3 import ensure_bucket

    created = ensure_bucket(settings.s3_endpoint, settings.s3_bucket, settings.s3_access_key,
                            settings.s3_secret_key, settings.s3_region)
    where = f"s3://{settings.s3_bucket} at {settings.s3_endpoint}"
    return f"created {where}" if created else f"{where} exists"


def _imported_step(module: str) -> Callable[[Settings], str]:
    """``module``'s ``init_step``, imported when the step runs: cluster.broker defines Prometheus
    metrics, and every `littlestats` command imports this module before `serve` has chosen the
    metrics' multiprocess mode."""
    def step(settings: Settings) -> str:
        init_step: Callable[[Settings], str] = importlib.import_module(module).init_step
        return init_step(settings)
    return step


# In order; each step is idempotent.
INIT_STEPS: list[InitStep] = [
    InitStep("bucket", create_bucket),
    InitStep("catalog", _imported_step("cluster.catalog")),
    InitStep("leases", _imported_step("cluster.lease")),
    InitStep("stream", _imported_step("cluster.broker")),
]


def cluster_toml(values: Mapping[str, Any]) -> str:
    """``key = value`` lines of a TOML settings file (strings, numbers, booleans)."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            text = json.dumps(str(value))  # a JSON string is a TOML basic string
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


@click.group()
def cluster() -> None:
    """Several machines sharing object storage, a catalog and a broker (docs/cluster.md)."""


@cluster.command("init")
@click.option("--config", "config_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The cluster's settings file (cluster.toml), as every node uses it.")
def init(config_file: Path) -> None:
    """Create what the cluster's nodes share: the bucket, and so on. Safe to run again."""
    try:
        settings = load_settings(environ={**os.environ, "LITTLESTATS_CONFIG": str(config_file)})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not settings.clustered:
        raise click.ClickException(f"{config_file} names no shared engine (s3_endpoint, "
                                   "catalog_dsn, broker_url): see docs/cluster.md")
    for step in INIT_STEPS:
        try:
            said = step.run(settings)
        except Exception as exc:
            raise click.ClickException(f"{step.name}: {exc}") from None
        click.echo(f"{step.name}: {said}")


@cluster.command("engines")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the engines keep their data and logs (kept for the next run).")
@click.option("--bucket", default="littlestats", show_default=True, help="The bucket to name.")
@click.option("--osd-size", default="4G", show_default=True,
              help="Size of the Ceph OSD's (sparse) store file, e.g. 4G, 500M.")
def engines(directory: Path, bucket: str, osd_size: str) -> None:
    """Run PostgreSQL, NATS and Ceph (S3) on this machine for a trial cluster, until Ctrl-C.

    Prints the settings every node's cluster.toml needs (also written to DIR/cluster.toml). The
    data stays in DIR for the next run; the ports are chosen at each start, so the settings
    change with them."""
    from cluster.engines import Ceph, EngineError, Nats, Postgres

    size = _size(osd_size)
    directory = directory.resolve()
    pg, broker = Postgres(directory / "postgres"), Nats(directory / "nats")
    ceph = Ceph(directory / "ceph", osd_size=size)
    started = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for label, engine in (("PostgreSQL", pg), ("NATS", broker), ("Ceph", ceph)):
            click.echo(f"starting {label} ...", err=True)
            engine.start()
            started.append(engine)
            click.echo(f"{label} ready in {engine.start_seconds:.1f} s, "
                       f"{engine.rss() / 1e6:.0f} MB resident, {engine.disk() / 1e6:.0f} MB on disk"
                       f" (log: {engine.describe()['log']})", err=True)
            if stop.is_set():
                return
        values = {"s3_endpoint": ceph.endpoint, "s3_bucket": bucket, "s3_region": ceph.region,
                  "s3_access_key": ceph.access_key, "s3_secret_key": ceph.secret_key,
                  "catalog_dsn": pg.dsn, "broker_url": broker.url}
        fragment = ("# The engines of a trial cluster (littlestats cluster engines). Every node:\n"
                    + cluster_toml(values)
                    + "# Each node its own name:\n" + cluster_toml({"node_name": "node1"}))
        (directory / "cluster.toml").write_text(fragment)
        (directory / "cluster.toml").chmod(0o600)
        click.echo(fragment, nl=False)
        click.echo(f"(written to {directory / 'cluster.toml'}; Ctrl-C stops the engines)",
                   err=True)
        while not stop.wait(1.0):
            for engine in started:
                if not engine.running():
                    raise click.ClickException(f"an engine stopped; see {engine.describe()['log']}")
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for engine in reversed(started):
            engine.stop()
        click.echo("engines stopped", err=True)


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: a size such as 4G or 500M",
                                 param_hint="--osd-size") from None


COMMANDS = [cluster]
