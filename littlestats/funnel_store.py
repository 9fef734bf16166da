"""Funnel definitions of the control plane (``funnels`` table; docs/api.md, Funnels).

``FunnelStore`` holds their queries; ``littlestats.controlplane.ControlPlane`` (which owns the
SQLite connection, ``_conn`` and ``_tx``) inherits them. A definition is stored as the
``warehouse.query.funnels.Funnel`` it was validated into: the steps as JSON (a goal step by the goal's id only), the window as columns.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from littlestats.ids import new_id, now_iso
from warehouse.query.funnels import Funnel, Step

#: At most this many funnels per site.
MAX_FUNNELS_PER_SITE = 50


class DuplicateFunnelName(ValueError):
    """Another funnel of the site already has this name."""


@dataclass(frozen=True)
class SavedFunnel:
    """A site's funnel: its name, definition and who made it when."""

    id: str
    site_id: str
    name: str
    funnel: Funnel
    created_by: str | None
    created_at: str
    updated_at: str

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name,
                               "steps": [s.public() for s in self.funnel.steps], "per": self.funnel.per}
        if self.funnel.days is not None:
            out["days"] = self.funnel.days
        return {**out, "createdBy": self.created_by, "createdAt": self.created_at, "updatedAt": self.updated_at}


def _steps_json(funnel: Funnel) -> str:
    return orjson.dumps([{"kind": s.kind, "value": s.value, "label": s.label} for s in funnel.steps]).decode()


def _step(stored: dict[str, Any]) -> Step:
    """A stored step. A goal step is kept as ``{"kind": "goal", "value": <goal id>}``; one saved
    before goal steps were live goals (the goal's kind and value copied, its id under ``goal``)
    now refers to that goal too."""
    if stored.get("goal"):
        return Step("goal", stored["goal"], stored.get("label"))
    return Step(stored["kind"], stored["value"], stored.get("label"))


def _saved(row: sqlite3.Row) -> SavedFunnel:
    steps = tuple(_step(s) for s in orjson.loads(row["steps"]))
    return SavedFunnel(row["id"], row["site_id"], row["name"], Funnel(steps, row["per"], row["window_days"]),
                       row["created_by"], row["created_at"], row["updated_at"])


class FunnelStore:
    """Funnel definitions (mixed into ``ControlPlane``)."""

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def list_funnels(self, site_id: str) -> list[SavedFunnel]:
        rows = self._conn().execute(
            "SELECT * FROM funnels WHERE site_id = ? ORDER BY created_at, rowid", (site_id,)).fetchall()
        return [_saved(r) for r in rows]

    def get_funnel(self, site_id: str, funnel_id: str) -> SavedFunnel | None:
        row = self._conn().execute(
            "SELECT * FROM funnels WHERE site_id = ? AND id = ?", (site_id, funnel_id)).fetchone()
        return _saved(row) if row else None

    def count_funnels(self, site_id: str) -> int:
        return int(self._conn().execute("SELECT count(*) FROM funnels WHERE site_id = ?", (site_id,)).fetchone()[0])

    def create_funnel(self, site_id: str, name: str, funnel: Funnel, created_by: str | None) -> SavedFunnel:
        """Save a new funnel; ``DuplicateFunnelName`` when the site has one of that name."""
        now = now_iso()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO funnels (id, site_id, name, steps, per, window_days, created_by, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_id(), site_id, name, _steps_json(funnel), funnel.per, funnel.days, created_by, now, now))
                row = db.execute("SELECT * FROM funnels WHERE site_id = ? AND name = ?", (site_id, name)).fetchone()
        except sqlite3.IntegrityError:
            raise DuplicateFunnelName(name) from None
        return _saved(row)

    def update_funnel(self, site_id: str, funnel_id: str, name: str, funnel: Funnel) -> SavedFunnel | None:
        """Replace a funnel's name and definition (``None``: no such funnel)."""
        try:
            with self._tx() as db:
                changed = db.execute(
                    "UPDATE funnels SET name = ?, steps = ?, per = ?, window_days = ?, updated_at = ?"
                    " WHERE site_id = ? AND id = ?",
                    (name, _steps_json(funnel), funnel.per, funnel.days, now_iso(), site_id, funnel_id)).rowcount
        except sqlite3.IntegrityError:
            raise DuplicateFunnelName(name) from None
        return self.get_funnel(site_id, funnel_id) if changed else None

    def delete_funnel(self, site_id: str, funnel_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM funnels WHERE site_id = ? AND id = ?", (site_id, funnel_id)).rowcount > 0
