"""``littlestats members …`` and ``littlestats audit``: site members and the audit log from the
command line (docs/access.md). What they change is recorded in the audit log as done by ``cli``.

Import-light on purpose (``littlestats.cli`` imports it for every command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from littlestats import audit
from littlestats.cli_options import data_dir_option, echo_json, settings_from, site_of
from littlestats.controlplane import ROLES, ControlPlane, LastOwner, Site, User

site_option = click.option("--site", "site_ref", required=True, help="Site id or domain key.")


def _open(data_dir: Path | None) -> tuple[ControlPlane, Any]:
    settings = settings_from(data_dir=data_dir)
    return ControlPlane(settings.control_db), settings


def _member(store: ControlPlane, site: Site, who: str) -> User:
    user = store.find_user_by_email(who) or store.get_user(who)
    if user is None or store.role_of(user.id, site.id) is None:
        raise click.BadParameter(f"{who!r} is not a member of {site.domain} (see `littlestats members list`)",
                                 param_hint="USER")
    return user


@click.group("members")
def members() -> None:
    """List, invite, remove and change the members of a site."""


@members.command("list")
@site_option
@data_dir_option
def members_list(site_ref: str, data_dir: Path | None) -> None:
    """Print the site's members and open invitations as JSON."""
    store, _settings = _open(data_dir)
    site = site_of(site_ref, store)
    echo_json({"members": [m.public() for m in store.list_members(site.id)],
               "invitations": [i.public() for i in store.list_invitations(site.id) if i.usable()]})


@members.command("invite")
@click.argument("email")
@site_option
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--url", "base_url", default=None,
              help="The server's address as people reach it (default: http://HOST:PORT of the settings).")
@data_dir_option
def members_invite(email: str, site_ref: str, role: str, base_url: str | None, data_dir: Path | None) -> None:
    """Invite EMAIL and print the one-time link (no mail is sent: pass it on yourself)."""
    from api.members import create_invitation, invitation_path, valid_email

    store, settings = _open(data_dir)
    site = site_of(site_ref, store)
    try:
        email = valid_email(email)
    except Exception as exc:  # falcon's 400, named for the API
        raise click.BadParameter(getattr(exc, "description", None) or str(exc), param_hint="EMAIL") from None
    invitation, plain = create_invitation(store, site, email, role, None)
    base = (base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    click.echo(f"{base}{invitation_path(plain)}")
    click.echo(f"(for {email} as {role} of {site.domain}; valid until {invitation.expires_at}, once)", err=True)


@members.command("remove")
@click.argument("user")
@site_option
@data_dir_option
def members_remove(user: str, site_ref: str, data_dir: Path | None) -> None:
    """Take USER's (email or id) role on the site away."""
    store, _settings = _open(data_dir)
    site = site_of(site_ref, store)
    found = _member(store, site, user)
    role = store.role_of(found.id, site.id)
    try:
        store.remove_member(site.id, found.id)
    except LastOwner as exc:
        raise click.ClickException(str(exc)) from None
    audit.record(store, audit.MEMBER_REMOVED, actor=None, site_id=site.id, target=found.id, details={"role": role})
    echo_json({"userId": found.id, "removed": True})


@members.command("role")
@click.argument("user")
@click.argument("role", type=click.Choice(ROLES))
@site_option
@data_dir_option
def members_role(user: str, role: str, site_ref: str, data_dir: Path | None) -> None:
    """Give USER (email or id) ROLE on the site (adds them when they are not a member yet)."""
    store, _settings = _open(data_dir)
    site = site_of(site_ref, store)
    found = store.find_user_by_email(user) or store.get_user(user)
    if found is None:
        raise click.BadParameter(f"no user {user!r}: invite them (`littlestats members invite`)", param_hint="USER")
    before = store.role_of(found.id, site.id)
    try:
        if before is None:
            store.set_member(site.id, found.id, role)
        else:
            store.change_role(site.id, found.id, role)
    except LastOwner as exc:
        raise click.ClickException(str(exc)) from None
    if before is None:
        audit.record(store, audit.MEMBER_ADDED, actor=None, site_id=site.id, target=found.id, details={"role": role})
    elif before != role:
        audit.record(store, audit.MEMBER_ROLE_CHANGED, actor=None, site_id=site.id, target=found.id,
                     details={"from": before, "to": role})
    echo_json({"userId": found.id, "role": role})


@members.command("transfer")
@click.argument("user")
@site_option
@data_dir_option
def members_transfer(user: str, site_ref: str, data_dir: Path | None) -> None:
    """Make USER (a member: email or id) an owner; every other owner becomes an admin."""
    store, _settings = _open(data_dir)
    site = site_of(site_ref, store)
    found = _member(store, site, user)
    store.set_member(site.id, found.id, "owner")
    for member in store.list_members(site.id):
        if member.role == "owner" and member.user_id != found.id:
            store.change_role(site.id, member.user_id, "admin")
    audit.record(store, audit.OWNERSHIP_TRANSFERRED, actor=None, site_id=site.id, target=found.id,
                 details={"to": found.email or found.name})
    echo_json({"siteId": site.id, "owner": found.id})


@click.command("audit")
@click.option("--site", "site_ref", default=None, help="Only this site's entries (id or domain key).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@data_dir_option
def audit_command(site_ref: str | None, limit: int, data_dir: Path | None) -> None:
    """Print the audit log as JSON, newest first."""
    store, _settings = _open(data_dir)
    site_id = site_of(site_ref, store).id if site_ref else None
    echo_json({"entries": [e.public() for e in store.list_audit(site_id, limit=limit)]})


COMMANDS = [members, audit_command]
