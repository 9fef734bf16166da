"""The ``littlestats`` command line. Every command takes ``--data-dir`` (or ``LITTLESTATS_DATA_DIR``)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import click

from littlestats import __version__, audit
from littlestats.cli_options import data_dir_option, echo_json, settings_from, site_of
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
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A TOML settings file (default: littlestats.toml in the data directory), e.g. a"
                   " cluster node's cluster.toml (docs/cluster.md).")
def serve(data_dir: Path | None, host: str | None, port: int | None, workers: int | None, dev: bool | None,
          config_file: Path | None) -> None:
    """Run ingest, query API, live feed and scheduled jobs on this machine."""
    if config_file is not None:
        os.environ["LITTLESTATS_CONFIG"] = str(config_file.resolve())  # read by load_settings
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
@click.option("--owner", default=None, help="Email of the site's owner (a user created if new; default: none, "
                                             "only server admins see it until `members role`).")
@data_dir_option
def sites_add(domain: str, name: str | None, timezone: str, retention_days: int | None, owner: str | None,
              data_dir: Path | None) -> None:
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
    owner_id = None
    if owner:
        user = store.find_user_by_email(owner) or store.create_user(email=owner, name=owner)
        owner_id = user.id
    site = store.create_site(domain, name=name, owner_id=owner_id, timezone=timezone, retention_days=retention)
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


@main.command()
@click.option("--site", "site_ref", required=True, help="Site id or domain key.")
@click.option("--visitor", "visitor_id", default=None, help="The tracker's visitor id (ls_vid in the visitor's browser).")
@click.option("--visitor-key", type=click.IntRange(0, 2**64 - 1), default=None,
              help="A stored visitor_key (64-bit, as in the events table).")
@click.option("--user", "user_id", default=None, help="A user id sent with identify(): every visitor linked to it.")
@data_dir_option
def erase(site_ref: str, visitor_id: str | None, visitor_key: int | None, user_id: str | None,
          data_dir: Path | None) -> None:
    """Erase one person's events everywhere (right to be forgotten); prints a summary as JSON."""
    from jobs.cli import _daemon, _progress, explain
    from warehouse.erase import visitor_key_of

    if [visitor_id, visitor_key, user_id].count(None) != 2:
        raise click.UsageError("name the person with exactly one of --visitor, --visitor-key or --user")
    settings = settings_from(data_dir=data_dir)
    site = site_of(site_ref, settings=settings)
    keys = [visitor_key] if visitor_key is not None else []
    if visitor_id is not None:
        keys = [visitor_key_of(site.secret, visitor_id)]

    try:
        client = _daemon(settings)
        if client is not None:
            from rich.console import Console

            with Console(stderr=True).status("erasing (in the running warehouse process)…"):
                summary = client.erase(site.id, keys, user_id)
        else:
            from warehouse.service import Warehouse

            wh = Warehouse(settings)
            try:
                with _progress("erasing: raw files, then the warehouse") as progress:
                    summary = wh.erase(site.id, keys, user_id, progress=progress).public()
            finally:
                wh.close()
    except Exception as exc:
        raise click.ClickException(explain(exc, "erase", data_dir)) from None
    store = ControlPlane(settings.control_db)
    try:
        audit.record_erasure(store, summary, actor=None, site_id=site.id,
                             by="user" if user_id is not None else "visitor")
    finally:
        store.close()
    echo_json(summary)
@main.group()
def shares() -> None:
    """Share links: a site's read-only dashboard at /share/{slug} (docs/sharing.md)."""


@shares.command("add")
@click.option("--site", required=True, help="The site's id or domain key.")
@click.option("--label", default="", help="A label, to tell links apart.")
@click.option("--password-stdin", is_flag=True, default=False,
              help="Protect the link with a password read from the first line of standard input.")
@click.option("--embed-origin", "origins", multiple=True,
              help="An origin that may embed the link in a frame, e.g. https://blog.example.com (repeatable).")
@data_dir_option
def shares_add(site: str, label: str, password_stdin: bool, origins: tuple[str, ...], data_dir: Path | None) -> None:
    """Create a share link and print it as JSON: its `path` is shown this once (only a hash is kept)."""
    import falcon

    from api.shares import share_changes
    from dashboard.passwords import hash_password

    body: dict[str, object] = {"label": label, "embedOrigins": list(origins)}
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    try:
        changes = share_changes(body)
    except falcon.HTTPBadRequest as exc:
        raise click.UsageError(str(exc.description)) from None
    store = ControlPlane(settings_from(data_dir=data_dir).control_db)
    password = changes.get("password")
    share, slug = store.create_share(site_of(site, store).id, label=changes["label"],
                                     password_hash=hash_password(password) if password else None,
                                     embed_origins=changes["embed_origins"])
    audit.record(store, audit.SHARE_CREATED, actor=None, site_id=share.site_id, target=share.id,
                 details={"label": share.label, "password": password is not None,
                          "embedOrigins": len(share.embed_origins)})
    echo_json({**share.public(), "slug": slug, "path": f"/share/{slug}"})


@shares.command("list")
@click.option("--site", required=True, help="The site's id or domain key.")
@data_dir_option
def shares_list(site: str, data_dir: Path | None) -> None:
    """Print the site's share links as JSON (revoked ones too; never the links themselves)."""
    store = ControlPlane(settings_from(data_dir=data_dir).control_db)
    echo_json({"shares": [s.public() for s in store.list_shares(site_of(site, store).id)]})


@shares.command("revoke")
@click.option("--site", required=True, help="The site's id or domain key.")
@click.argument("share_id")
@data_dir_option
def shares_revoke(site: str, share_id: str, data_dir: Path | None) -> None:
    """Revoke the share link SHARE_ID (see `shares list`): it stops working at once."""
    store = ControlPlane(settings_from(data_dir=data_dir).control_db)
    revoked = store.revoke_share(site_of(site, store).id, share_id)
    if revoked is None:
        raise click.BadParameter(f"no share link {share_id!r} of this site", param_hint="SHARE_ID")
    audit.record(store, audit.SHARE_REVOKED, actor=None, site_id=revoked.site_id, target=revoked.id,
                 details={"label": revoked.label})
    echo_json(revoked.public())


# Commands of later components live beside their code and are registered here.
for _module in ("jobs.cli", "api.cli", "api.access_cli", "littlestats.backup_cli", "interop.cli",
                "littlestats.export_cli", "notify.cli", "cluster.cli"):
    try:
        for _command in importlib.import_module(_module).COMMANDS:
            main.add_command(_command)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise


if __name__ == "__main__":
    sys.exit(main())
