"""A process that asks for a lease and reports on stdout, one JSON object a line (for the tests).

    python lease_holder.py DSN NAME HOLDER TTL [--at UNIX_TIME] [--once]

Waits until ``--at`` (so that several processes ask at the same instant), then asks for the lease:
once with ``--once`` (printing ``{"event": "refused"}`` if another holds it), else every 0.05 s
until it gets it. Once it holds it, prints ``{"event": "acquired", "token": N, ...}`` and keeps it,
renewing in the background, until killed; prints ``{"event": "lost"}`` if it loses it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import orjson

from cluster.lease import try_acquire


def say(**event: object) -> None:
    sys.stdout.write(orjson.dumps({**event, "t": time.time()}).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("name")
    parser.add_argument("holder")
    parser.add_argument("ttl", type=float)
    parser.add_argument("--at", type=float, default=0.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    lost = threading.Event()
    while time.time() < args.at:
        time.sleep(min(0.005, args.at - time.time()))
    while True:
        lease = try_acquire(args.dsn, args.name, args.holder, args.ttl,
                            on_lost=lambda reason: (say(event="lost", reason=reason), lost.set()))
        if lease is not None:
            break
        if args.once:
            say(event="refused")
            return
        time.sleep(0.05)
    say(event="acquired", token=lease.token, holder=args.holder)
    lost.wait()
    time.sleep(3600)  # the test kills it


if __name__ == "__main__":
    main()
