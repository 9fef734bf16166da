"""Real local servers for the notification tests: an SMTP server (aiosmtpd) that keeps what it
receives, and an HTTPS webhook receiver with a certificate from a CA made by the test (trustme)."""

from __future__ import annotations

import email
import email.policy
import http.server
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from aiosmtpd.controller import Controller

from ingest.seal import events_to_table, write_parquet_atomic
from tests.server import free_port
from tests.warehouse.frames import event


@dataclass
class Inbox:
    """What the SMTP server received: (envelope sender, recipients, parsed message)."""

    mails: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def take(self) -> list[tuple[str, list[str], EmailMessage]]:
        out, self.mails[:] = list(self.mails), []
        return out


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class Receiver:
    """An HTTPS server that records every POST and answers with the next of ``answers`` (then 200)."""

    url: str
    ca_file: Path
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.requests]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    state = Receiver(f"https://127.0.0.1:{server.server_address[1]}/hooks/littlestats", ca_file)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def write_events(raw_dir: Path, site_id: str, events: list[dict[str, Any]], tag: str = "1") -> None:
    """Hand-made raw events (``tests.warehouse.frames.event`` rows) as hourly Parquet parts."""
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for e in events:
        ms = int(e["ts"].timestamp() * 1000)
        row = {**e, "site_id": site_id, "ts": ms, "received_at": ms, "props_str": None, "props_num": None,
               "props_bool": None}
        by_hour.setdefault(e["ts"].astimezone(UTC).replace(minute=0, second=0, microsecond=0), []).append(row)
    for hour, rows in by_hour.items():
        write_parquet_atomic(events_to_table(rows), raw_dir / f"site_id={site_id}" / f"date={hour:%Y-%m-%d}"
                             / f"hour={hour:%H}" / f"part-{tag}.parquet")


def visits_at(hour: datetime, visitors: range, **fields: Any) -> list[dict[str, Any]]:
    """One pageview per visitor key in ``visitors``, spread over the hour starting at ``hour``."""
    from tests.warehouse.frames import T0

    base = (hour - T0).total_seconds() / 60
    n = max(len(visitors), 1)
    return [event(base + 1 + 55 * i / n, event_id=f"e{hour:%Y%m%d%H}-{key}-{fields.get('name') or 'pv'}",
                  visitor_key=key, **fields) for i, key in enumerate(visitors)]
