"""Security headers of every dashboard page and asset.

The policy allows only this origin's scripts, styles, images (and ``data:`` images), fetches and
form posts; no inline script or ``<style>`` (style *attributes* set through the CSSOM, as chart
libraries do, are not affected); the pages may not be framed — except a share link's pages, by
the origins saved on the link (``frame_ancestors``; docs/sharing.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def content_security_policy(frame_ancestors: Sequence[str] = ()) -> str:
    """The policy; `frame_ancestors` are origins that may frame the page (none: no one may).

    The origins must already be checked to be plain origins (``api.shares.ORIGIN``)."""
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'self'")


CONTENT_SECURITY_POLICY = content_security_policy()

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def secure(resp: Any, frame_ancestors: Sequence[str] = ()) -> None:
    """Add the security headers to a dashboard response (framable by `frame_ancestors` only)."""
    for name, value in HEADERS.items():
        resp.set_header(name, value)
    if frame_ancestors:
        resp.set_header("Content-Security-Policy", content_security_policy(frame_ancestors))
        resp.delete_header("X-Frame-Options")  # it can only say DENY or SAMEORIGIN
