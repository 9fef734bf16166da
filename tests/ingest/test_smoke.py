from __future__ import annotations

import httpx
import pyarrow.dataset as ds

from tests.server import LiveServer

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


def test_pageview_lands_in_parquet_after_shutdown(server: LiveServer, site: dict) -> None:
    r = httpx.post(f"{server.url}/api/v2/track/{site['domainKey']}", json={"url": "https://example.com/a"},
                   headers={"User-Agent": CHROME})
    assert r.status_code == 200, r.text
    server.stop()
    table = ds.dataset(server.data_dir / "raw", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 1
    assert table.column("pathname").to_pylist() == ["/a"]
