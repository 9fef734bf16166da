"""The audit log: who did which administrative action, when, on which site (docs/access.md).

Every part that changes access or deletes data calls ``record`` once the change is made::

    audit.record(control, audit.SHARE_CREATED, actor=principal, site_id=site.id,
                 target=share.id, details={"label": "for the client"})

``actor`` is a ``User``, anything with a ``user`` attribute (``api.auth.Principal``), or ``None``
(the command line, which runs as whoever may read the data directory: recorded as ``cli``).
An entry never holds data about a site's visitors: ``details`` takes counts and names of
administrative objects only, and ``record`` refuses keys that would hold a visitor's identity
(``VISITOR_KEYS``) — an erasure is recorded with how many events it removed, not whose.
"""

from __future__ import annotations

from typing import Any

from littlestats.controlplane import ControlPlane, User

SITE_CREATED = "site.created"
SITE_DELETED = "site.deleted"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"
MEMBER_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
MEMBER_LEFT = "member.left"
MEMBER_ROLE_CHANGED = "member.role_changed"
INVITATION_CREATED = "invitation.created"
INVITATION_ACCEPTED = "invitation.accepted"
INVITATION_WITHDRAWN = "invitation.withdrawn"
OWNERSHIP_TRANSFERRED = "ownership.transferred"
SHARE_CREATED = "share.created"
SHARE_REVOKED = "share.revoked"
ERASURE_RUN = "erasure.run"
WEBHOOK_CREATED = "webhook.created"
WEBHOOK_DELETED = "webhook.deleted"

ACTIONS = (SITE_CREATED, SITE_DELETED, TOKEN_CREATED, TOKEN_REVOKED, MEMBER_ADDED, MEMBER_REMOVED,
           MEMBER_LEFT, MEMBER_ROLE_CHANGED, INVITATION_CREATED, INVITATION_ACCEPTED,
           INVITATION_WITHDRAWN, OWNERSHIP_TRANSFERRED, SHARE_CREATED, SHARE_REVOKED, ERASURE_RUN,
           WEBHOOK_CREATED, WEBHOOK_DELETED)

#: Detail keys refused: they would put a visitor's identity into the log.
VISITOR_KEYS = frozenset({"visitor", "visitorId", "visitor_id", "visitorKey", "userId", "user_id",
                          "identifiedUserId", "ip", "address", "userAgent"})
MAX_DETAIL = 500


def _actor(actor: Any) -> tuple[str | None, str | None]:
    user = actor if isinstance(actor, User) else getattr(actor, "user", None)
    if isinstance(user, User):
        return user.id, user.email or user.name
    return None, "cli" if actor is None else "dev"


def record(control: ControlPlane, action: str, *, actor: Any, site_id: str | None = None,
           target: str | None = None, details: dict[str, Any] | None = None) -> int:
    """Append one entry; returns its id. ``ValueError`` for an unknown action or visitor data."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; known: {', '.join(ACTIONS)}")
    details = dict(details or {})
    bad = sorted(VISITOR_KEYS & set(details))
    if bad:
        raise ValueError(f"audit details may not hold visitor data ({bad[0]!r}): record counts instead")
    for key, value in details.items():
        if not isinstance(value, (str, int, float, bool, type(None))) or (
                isinstance(value, str) and len(value) > MAX_DETAIL):
            raise ValueError(f"audit detail {key!r}: expected a number, a boolean or a short string")
    actor_id, actor_email = _actor(actor)
    return control.add_audit(action, actor_id, actor_email, site_id, target, details)


def record_erasure(control: ControlPlane, summary: dict[str, Any], *, actor: Any, site_id: str, by: str) -> int:
    """Record an erasure from its summary (``warehouse.erase``): what was removed, in counts only."""
    counts = ("visitorKeys", "rawFilesRewritten", "rawFilesRemoved", "rawRowsRemoved", "walSegmentsSealed")
    details = {"by": by, **{("people" if k == "visitorKeys" else k): summary[k] for k in counts if k in summary}}
    return record(control, ERASURE_RUN, actor=actor, site_id=site_id, target=summary.get("id"), details=details)
