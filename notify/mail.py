"""Sending mail through the configured SMTP server (``Settings.smtp_*``), with the standard library.

``smtp_security``: ``starttls`` (upgrade a plain connection, usually port 587), ``tls`` (TLS from
the first byte, usually 465) or ``none`` (a local relay). Without ``smtp_host`` nothing is sent:
``send`` raises ``SmtpNotConfigured`` and the API says so.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterable
from email.message import EmailMessage

from littlestats.config import Settings


class SmtpNotConfigured(RuntimeError):
    """No SMTP host is configured: mail is not sent."""

    def __init__(self) -> None:
        super().__init__("no SMTP server is configured (settings smtp_host and smtp_from; docs/reports.md):"
                         " reports and alerts are not mailed")


class MailError(RuntimeError):
    """The SMTP server could not be reached or refused the mail; the message says which."""


def send(settings: Settings, messages: Iterable[EmailMessage]) -> int:
    """Send every message over one SMTP connection; how many were sent."""
    if not settings.smtp_configured:
        raise SmtpNotConfigured()
    timeout = settings.smtp_timeout_seconds
    try:
        server: smtplib.SMTP
        if settings.smtp_security == "tls":
            server = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with server:
            if settings.smtp_security == "starttls":
                server.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                server.login(settings.smtp_user, settings.smtp_password)
            sent = 0
            for msg in messages:
                server.send_message(msg)
                sent += 1
            return sent
    except (smtplib.SMTPException, OSError) as exc:
        # the password is never part of smtplib's messages; the host is useful to the operator
        raise MailError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}") from exc
