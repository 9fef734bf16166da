"""``littlestats reports``: mail (or only show) one report by hand.

    littlestats reports send --site example.com --period last-week --to ana@example.com
    littlestats reports send --site example.com --period month:2026-11 --dry-run

The numbers come from the running server's warehouse process when there is one, else from the
warehouse file opened here; the mail goes through the configured SMTP server (docs/reports.md).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click

from littlestats.cli_options import data_dir_option, echo_json, settings_from, site_of
from littlestats.controlplane import ControlPlane
from notify import mail
from notify.compose import compose
from notify.periods import Period, last_complete, period_containing
from notify.render import report_message

PERIOD_HELP = "last-week, last-month, week:YYYY-MM-DD (the week of that day) or month:YYYY-MM."


def parse_period(text: str, timezone: str, now: datetime) -> Period:
    """A ``--period`` value as a report period in the site's zone."""
    if text in ("last-week", "last-month"):
        return last_complete("weekly" if text == "last-week" else "monthly", timezone, now, timedelta(0))
    kind, _, value = text.partition(":")
    try:
        if kind == "week":
            return period_containing(date.fromisoformat(value), "weekly")
        if kind == "month":
            return period_containing(date.fromisoformat(value + "-01"), "monthly")
    except ValueError:
        pass
    raise click.BadParameter(f"{text!r}: expected {PERIOD_HELP}", param_hint="--period")


@click.group()
def reports() -> None:
    """Mailed reports (docs/reports.md)."""


@reports.command("send")
@click.option("--site", required=True, help="Site id or domain key.")
@click.option("--period", default="last-week", show_default=True, help=PERIOD_HELP)
@click.option("--to", "recipient", default=None, help="Recipient's email address (needed unless --dry-run).")
@click.option("--dry-run", is_flag=True, help="Print the mail instead of sending it.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the report's numbers as JSON.")
@data_dir_option
def send(site: str, period: str, recipient: str | None, dry_run: bool, as_json: bool, data_dir: Path | None) -> None:
    """Compose the report of SITE for PERIOD and mail it to --to (or print it with --dry-run)."""
    from warehouse.client import LocalWarehouse, open_warehouse

    settings = settings_from(data_dir=data_dir)
    if not dry_run and not recipient:
        raise click.UsageError("give --to EMAIL, or --dry-run to see the mail")
    if not dry_run and not settings.smtp_configured:
        raise click.ClickException(str(mail.SmtpNotConfigured()))
    store = ControlPlane(settings.control_db)
    try:
        found = site_of(site, store)
        goals = store.goal_specs(found.id)
    finally:
        store.close()
    chosen = parse_period(period, found.timezone, datetime.now(UTC))
    wh = open_warehouse(settings)
    try:
        report = compose(found, chosen, goals, wh)
    finally:
        if isinstance(wh, LocalWarehouse):
            wh.close()
    msg = report_message(report, settings.smtp_from or "littlestats@localhost", recipient or "you@example.com")
    if dry_run:
        if as_json:
            echo_json(report.public())
            return
        body = msg.get_body(("plain",))
        click.echo(f"Subject: {msg['Subject']}\nTo: {msg['To']}\n")
        click.echo(body.get_content() if body is not None else "")
        return
    try:
        mail.send(settings, [msg])
    except mail.MailError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sent {msg['Subject']!r} to {recipient}")


COMMANDS = [reports]
