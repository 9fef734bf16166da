"""``littlestats reports send`` by hand, through an SMTP server that insists on STARTTLS and a
login (aiosmtpd with a certificate from a CA made by the test, trusted through SSL_CERT_FILE as an
operator would trust an internal CA); ``--dry-run`` shows the mail without sending it."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner

from littlestats.cli import main
from tests.notify.conftest import Inbox
from tests.server import add_site, free_port

USER, PASSWORD = "stats@example.com", "smtp secret 42"


@pytest.fixture(scope="module")
def tls_smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Inbox, int, Path, list[str]]]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    logins: list[str] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
        logins.append(f"{mechanism}:{'ok' if ok else 'refused'}")
        return AuthResult(success=ok)

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        yield inbox, port, ca_file, logins
    finally:
        controller.stop()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(data_dir: Path, env: dict[str, str], *args: str) -> Ran:
    """The command in this process (click's runner), with ``env`` as its environment."""
    clear = {k: None for k in os.environ if k.startswith("LITTLESTATS_") or k == "SSL_CERT_FILE"}
    result = CliRunner().invoke(main, ["reports", "send", *args, "--data-dir", str(data_dir)], env={**clear, **env})
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_reports_send_by_hand_over_starttls_with_a_login(tmp_path: Path, tls_smtp: tuple[Inbox, int, Path, list[str]]) -> None:
    inbox, port, ca_file, logins = tls_smtp
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "hand.example", "--timezone", "Europe/Berlin")
    env = {"LITTLESTATS_SMTP_HOST": "127.0.0.1", "LITTLESTATS_SMTP_PORT": str(port), "LITTLESTATS_SMTP_FROM": USER,
           "LITTLESTATS_SMTP_USER": USER, "LITTLESTATS_SMTP_PASSWORD": PASSWORD, "SSL_CERT_FILE": str(ca_file)}

    shown = run(data_dir, env, "--site", site["id"], "--period", "week:2026-11-30", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Subject: Weekly report for hand.example, week of 30 Nov 2026: 0 visitors (new)")
    assert "Top pages (visitors, pageviews):\n  none" in shown.stdout
    numbers = json.loads(run(data_dir, env, "--site", site["id"], "--period", "month:2026-11", "--dry-run",
                             "--json").stdout)
    assert numbers["period"] == {"start": "2026-11-01", "end": "2026-11-30", "timezone": "Europe/Berlin"}
    assert inbox.take() == [] and logins == []  # a dry run sends nothing

    sent = run(data_dir, env, "--site", site["domainKey"], "--period", "last-month", "--to", "ana@hand.example")
    assert sent.returncode == 0, sent.stderr
    [(sender, to, msg)] = inbox.take()
    assert (sender, to) == (USER, ["ana@hand.example"]) and msg["Subject"].startswith("Monthly report for hand.example")
    assert logins[-1].endswith(":ok")
    logins.clear()

    # (aiosmtpd answers a second mechanism's failed login slowly: a short timeout keeps the test quick)
    refused = run(data_dir, {**env, "LITTLESTATS_SMTP_PASSWORD": "wrong", "LITTLESTATS_SMTP_TIMEOUT_SECONDS": "2"},
                  "--site", site["id"], "--to", "a@b.example")
    assert refused.returncode == 1 and "SMTP 127.0.0.1" in refused.stderr and "wrong" not in refused.stderr
    assert logins and all(x.endswith(":refused") for x in logins)
    untrusted = run(data_dir, {**env, "SSL_CERT_FILE": "/nonexistent"}, "--site", site["id"], "--to", "a@b.example")
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert inbox.take() == []
    quiet = {k: v for k, v in env.items() if not k.startswith("LITTLESTATS_SMTP")}
    unconfigured = run(data_dir, quiet, "--site", site["id"], "--to", "a@b.example")
    assert unconfigured.returncode == 1 and "no SMTP server is configured" in unconfigured.stderr
    bad = run(data_dir, env, "--site", site["id"], "--period", "fortnight", "--dry-run")
    assert bad.returncode == 2 and "--period" in bad.stderr
