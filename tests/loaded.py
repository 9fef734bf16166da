"""Generated traffic in a real warehouse: written as raw Parquet and loaded by the real loader."""

from __future__ import annotations

from pathlib import Path

from tests.generator import Traffic, TrafficSpec
from warehouse.database import connect
from warehouse.load import load_pending


def load_traffic(traffic: Traffic, spec: TrafficSpec, root: Path) -> Path:
    """Write ``traffic`` under ``root/raw`` and load it into ``root/wh.duckdb`` one load at a time
    (``spec.loads``: later loads bring late events into earlier hours); the warehouse file."""
    path = root / "wh.duckdb"
    for k in range(spec.loads):
        traffic.write_raw(root / "raw", load=k)
        con = connect(path)
        try:
            load_pending(con, root / "raw", spec.timezones)
        finally:
            con.close()
    return path
