"""The warehouse: raw Parquet → sessionized DuckDB facts and pre-aggregates.

Modules: ``tables`` (every DuckDB table), ``sessionize`` (visits, pure polars), ``load``
(exactly-once loads), ``rollups`` (pre-aggregates), ``retention``, ``service`` (the process that
owns the DuckDB file), ``client`` (how API workers query it), ``protocol`` (the socket format).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from littlestats.config import Settings


def purge_site(settings: Settings, site_id: str) -> int:
    """Remove every raw file, fact and pre-aggregate of a site deleted from the control plane.

    Goes through the warehouse process when it runs (it holds the DuckDB file), else opens the
    file here. Returns the number of rows removed.
    """
    from warehouse.client import WarehouseClient

    client = WarehouseClient(settings)
    if client.available():
        return int(client.call({"op": "purge_site", "site_id": site_id})["rows"])
    from warehouse.service import Warehouse

    wh = Warehouse(settings)
    try:
        return wh.purge_site(site_id)
    finally:
        wh.close()
