"""``littlestats token …`` and ``littlestats users …``: API access from the command line.

Import-light on purpose (``littlestats.cli`` imports it for every command).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from littlestats import audit
from littlestats.cli_options import data_dir_option, echo_json, settings_from, site_of
from littlestats.controlplane import SCOPES, ControlPlane


def _store(data_dir: Path | None) -> ControlPlane:
    return ControlPlane(settings_from(data_dir=data_dir).control_db)


@click.group("token")
def token() -> None:
    """Create, list and revoke API tokens (shown once, stored hashed)."""


@token.command("create")
@click.option("--user", "email", default=None, help="Email of the token's user (created if new; default: the admin).")
@click.option("--name", default="", help="A label for the token.")
@click.option("--admin", is_flag=True, default=False, help="Make a newly created user an admin.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="What the token may do (repeat; default: every scope). See docs/access.md.")
@click.option("--site", "sites", multiple=True, help="Limit the token to this site (id or domain key; repeat).")
@click.option("--expires-days", type=click.IntRange(1, 36_500), default=None, help="Stop working after this many days.")
@data_dir_option
def token_create(email: str | None, name: str, admin: bool, scopes: tuple[str, ...], sites: tuple[str, ...],
                 expires_days: int | None, data_dir: Path | None) -> None:
    """Create an API token and print it (the only time it is shown)."""
    store = _store(data_dir)
    site_ids = []
    for ref in sites:
        site_ids.append(site_of(ref, store).id)
    if email:
        user = store.find_user_by_email(email) or store.create_user(email=email, name=email, is_admin=admin)
    else:
        user = store.find_admin() or store.create_user(email="admin@localhost", name="admin", is_admin=True)
    expires = None
    if expires_days is not None:
        expires = (datetime.now(UTC) + timedelta(days=expires_days)).isoformat(timespec="seconds")
    plain = store.create_token(user.id, name=name, scopes=tuple(s for s in SCOPES if s in scopes) or None,
                               sites=tuple(site_ids) or None, expires_at=expires)
    created = store.find_token(plain)
    assert created is not None
    audit.record(store, audit.TOKEN_CREATED, actor=None, target=created.id,
                 details={"name": name, "owner": user.id, "scopes": " ".join(created.scopes),
                          "sites": " ".join(site_ids) or None})
    click.echo(plain)


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
    store = _store(data_dir)
    found = store.get_token(token_id)
    if found is None or not store.delete_token(token_id):
        raise click.BadParameter(f"no token with id {token_id!r}", param_hint="TOKEN_ID")
    audit.record(store, audit.TOKEN_REVOKED, actor=None, target=found.id,
                 details={"name": found.name, "owner": found.user_id})
    echo_json({"id": token_id, "revoked": True})


@click.group("users")
def users() -> None:
    """Manage users (each token belongs to one; a user sees only the sites they are a member of)."""


def _read_password(from_stdin: bool) -> str:
    """A new password: the first line of standard input, or typed twice at a prompt."""
    from dashboard.passwords import PasswordRuleError, check_rule

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise click.UsageError(
            "no terminal to ask for the password on: pipe it in with --password-stdin "
            "(or create the user with --no-password, for API tokens only)")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_rule(password)
    except PasswordRuleError as exc:
        raise click.BadParameter(str(exc), param_hint="password") from None
    return password


def _hash(password: str) -> str:
    from dashboard.passwords import hash_password

    return hash_password(password)


@users.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, default=False, help="Admins see every site.")
@click.option("--password-stdin", is_flag=True, default=False,
              help="Read the dashboard password from the first line of standard input (else: a prompt).")
@click.option("--no-password", is_flag=True, default=False,
              help="No dashboard password (the user works with API tokens only; set one later with `users passwd`).")
@data_dir_option
def users_add(email: str, name: str, admin: bool, password_stdin: bool, no_password: bool,
              data_dir: Path | None) -> None:
    """Create a user, with a dashboard password, and print it as JSON."""
    if password_stdin and no_password:
        raise click.UsageError("--password-stdin and --no-password exclude each other")
    store = _store(data_dir)
    if store.find_user_by_email(email):
        raise click.BadParameter(f"a user with email {email!r} exists", param_hint="EMAIL")
    password_hash = None if no_password else _hash(_read_password(password_stdin))
    user = store.create_user(email=email, name=name or email, is_admin=admin)
    if password_hash is not None:
        store.set_password_hash(user.id, password_hash)
    echo_json({"id": user.id, "email": user.email, "name": user.name, "isAdmin": user.is_admin,
               "hasPassword": password_hash is not None})


@users.command("passwd")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, default=False,
              help="Read the new password from the first line of standard input (else: a prompt).")
@data_dir_option
def users_passwd(email: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set the dashboard password of the user EMAIL; ends every dashboard session they have."""
    from dashboard.sessions import SessionStore

    store = _store(data_dir)
    user = store.find_user_by_email(email)
    if user is None:
        raise click.BadParameter(f"no user with email {email!r} (create one with `users add`)", param_hint="EMAIL")
    store.set_password_hash(user.id, _hash(_read_password(password_stdin)))
    ended = SessionStore(store).end_all(user.id)
    echo_json({"id": user.id, "email": user.email, "passwordSet": True, "sessionsEnded": ended})


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
