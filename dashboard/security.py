"""Security headers of every dashboard page and asset.

The policy allows only this origin's scripts, styles, images (and ``data:`` images), fetches and
form posts; no inline script or ``<style>`` (style *attributes* set through the CSSOM, as chart
libraries do, are not affected); the pages may not be framed.
"""

from __future__ import annotations

from typing import Any

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def secure(resp: Any) -> None:
    """Add the security headers to a dashboard response."""
    for name, value in HEADERS.items():
        resp.set_header(name, value)
