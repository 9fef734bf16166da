"""One cluster node's step, in a process of its own (for the tests); settings from the
``LITTLESTATS_*`` environment, one JSON object on stdout.

    python cluster_node.py load    # ClusterWarehouse.load(): {"files": N, "new_events": N}
    python cluster_node.py claim   # expire the load lease, take it over and claim the fence,
                                   # then give it back: {"token": N}
"""

from __future__ import annotations

import sys

import orjson
import psycopg

from cluster.catalog import connect_shared
from cluster.jobs import ClusterWarehouse, holder_name
from cluster.lease import LOAD_LEASE, claim, try_acquire
from littlestats.config import load_settings


def main() -> None:
    settings = load_settings()
    if sys.argv[1] == "load":
        warehouse = ClusterWarehouse(settings)
        try:
            result = warehouse.load()
        finally:
            warehouse.close()
        answer = {"files": result.files, "new_events": result.new_events}
    else:
        with psycopg.connect(settings.catalog_dsn, autocommit=True) as pg:
            pg.execute("UPDATE littlestats_leases SET expires_at = now() WHERE name = %s",
                       [LOAD_LEASE])
        lease = try_acquire(settings.catalog_dsn, LOAD_LEASE, holder_name(settings), 30)
        assert lease is not None
        con = connect_shared(settings)
        try:
            claim(con, lease)
        finally:
            con.close()
            lease.release()
        answer = {"token": lease.token}
    sys.stdout.write(orjson.dumps(answer).decode() + "\n")


if __name__ == "__main__":
    main()
