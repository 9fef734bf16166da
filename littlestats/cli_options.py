"""What every ``littlestats`` command shares: the ``--data-dir`` option, settings, JSON output.

A module of its own so that the modules holding commands (``jobs.cli``, ``api.cli``,
``littlestats.backup_cli``) can import it while ``littlestats.cli`` imports them to register their
commands, whichever of them is imported first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson

from littlestats.config import ConfigError, Settings, load_settings
from littlestats.controlplane import ControlPlane, Site


def data_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Data directory (default: $LITTLESTATS_DATA_DIR or ~/.local/share/littlestats).",
    )(f)


def settings_from(**options: Any) -> Settings:
    """Settings with command-line options applied, or a clean exit naming the bad setting."""
    try:
        return load_settings(options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def site_of(ref: str, store: ControlPlane | None = None, settings: Settings | None = None,
            option: str = "--site") -> Site:
    """The site by id or domain key (from ``store``, or the control plane of ``settings``), or a
    clean exit that says how to find it."""
    own = store is None
    if store is None:
        assert settings is not None
        store = ControlPlane(settings.control_db)
    try:
        site = store.get_site(ref)
    finally:
        if own:
            store.close()
    if site is None:
        raise click.BadParameter(f"no site {ref!r}: give its id or domain key (see `littlestats sites list`)",
                                 param_hint=option)
    return site
