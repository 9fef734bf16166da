"""Private instances of the engines a cluster runs on: Ceph (S3), PostgreSQL and NATS.

For tests and for trying a cluster on one machine (``littlestats cluster engines``): each engine
lives in a directory of ours, listens on 127.0.0.1 on a port chosen when it starts (several runs
share a machine, so never a fixed one), and is ready when ``start()`` returns. ``stop()`` leaves
nothing running: every process of an engine is in a process group of its own, and the whole
group is killed. A production cluster runs the same engines as services (docs/cluster.md).

The Debian packages are installed by ``scripts/cluster-engines``.
"""

from cluster.engines.ceph import Ceph
from cluster.engines.nats import Nats
from cluster.engines.postgres import Postgres
from cluster.engines.process import Engine, EngineError, Process, disk_bytes, free_port, rss_bytes

__all__ = ["Ceph", "Engine", "EngineError", "Nats", "Postgres", "Process", "disk_bytes",
           "free_port", "rss_bytes"]
