"""``littlestats token …`` and ``littlestats users …``: API access from the command line.

Import-light on purpose (``littlestats.cli`` imports it for every command).
"""

from __future__ import annotations

from pathlib import Path

import click

from littlestats.cli import data_dir_option, echo_json, settings_from
from littlestats.controlplane import ControlPlane


def _store(data_dir: Path | None) -> ControlPlane:
    return ControlPlane(settings_from(data_dir=data_dir).control_db)


@click.group("token")
def token() -> None:
    """Create, list and revoke API tokens (shown once, stored hashed)."""


@token.command("create")
@click.option("--user", "email", default=None, help="Email of the token's user (created if new; default: the admin).")
@click.option("--name", default="", help="A label for the token.")
@click.option("--admin", is_flag=True, default=False, help="Make a newly created user an admin.")
@data_dir_option
def token_create(email: str | None, name: str, admin: bool, data_dir: Path | None) -> None:
    """Create an API token and print it (the only time it is shown)."""
    store = _store(data_dir)
    if email:
        user = store.find_user_by_email(email) or store.create_user(email=email, name=email, is_admin=admin)
    else:
        user = store.find_admin() or store.create_user(email="admin@localhost", name="admin", is_admin=True)
    click.echo(store.create_token(user.id, name=name))


@token.command("list")
@click.option("--user", "email", default=None, help="Only the tokens of the user with this email.")
@data_dir_option
def token_list(email: str | None, data_dir: Path | None) -> None:
    """Print the tokens as JSON (ids, owners and labels; never the tokens themselves)."""
    store = _store(data_dir)
    user_id = None
    if email:
        user = store.find_user_by_email(email)
        if user is None:
            raise click.BadParameter(f"no user with email {email!r}", param_hint="--user")
        user_id = user.id
    emails = {u.id: u.email for u in store.list_users()}
    echo_json({"tokens": [{**t.public(), "userEmail": emails.get(t.user_id)} for t in store.list_tokens(user_id)]})


@token.command("revoke")
@click.argument("token_id")
@data_dir_option
def token_revoke(token_id: str, data_dir: Path | None) -> None:
    """Revoke the token with id TOKEN_ID (see `token list`): it stops working at once."""
    if not _store(data_dir).delete_token(token_id):
        raise click.BadParameter(f"no token with id {token_id!r}", param_hint="TOKEN_ID")
    echo_json({"id": token_id, "revoked": True})


@click.group("users")
def users() -> None:
    """Manage users (each token belongs to one; a user sees only the sites they own)."""


@users.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, default=False, help="Admins see every site.")
@data_dir_option
def users_add(email: str, name: str, admin: bool, data_dir: Path | None) -> None:
    """Create a user and print it as JSON."""
    store = _store(data_dir)
    if store.find_user_by_email(email):
        raise click.BadParameter(f"a user with email {email!r} exists", param_hint="EMAIL")
    user = store.create_user(email=email, name=name or email, is_admin=admin)
    echo_json({"id": user.id, "email": user.email, "name": user.name, "isAdmin": user.is_admin})


@users.command("list")
@data_dir_option
def users_list(data_dir: Path | None) -> None:
    """Print every user as JSON."""
    store = _store(data_dir)
    echo_json(
        {
            "users": [
                {"id": u.id, "email": u.email, "name": u.name, "isAdmin": u.is_admin}
                for u in store.list_users()
            ]
        }
    )


COMMANDS = [token, users]
