"""Keeps one engine running for a whole test run: ``python -m tests.cluster.engine_keeper KIND DIR
STATE WATCH_PID``.

Started by the first test process that needs the engine (tests/cluster/conftest.py); every test
process of the run (pytest-xdist workers) then reads how to reach it from the STATE file. The
engine's processes die with this keeper, and the keeper stops the engine and removes its data
when the process WATCH_PID (the run's main pytest process) ends, however it ends.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

from cluster import engines


def write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)  # readers see the whole file or none


def main(kind: str, directory: str, state_path: str, watch_pid: str) -> int:
    state = Path(state_path)
    engine: engines.Engine = getattr(engines, kind.capitalize())(Path(directory))
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        watched = os.pidfd_open(int(watch_pid))
    except ProcessLookupError:
        return 0
    try:
        engine.start()
    except Exception as exc:  # the test processes report it
        write_state(state, {"error": str(exc), "keeper": os.getpid()})
        return 1
    try:
        write_state(state, {**engine.describe(), "keeper": os.getpid(),
                            "start_seconds": engine.start_seconds, "rss": engine.rss(),
                            "disk": engine.disk(), "dir": str(engine.dir)})
        print(f"{kind} started in {engine.start_seconds:.1f} s for the run of process {watch_pid}",
              flush=True)
        while not stop:
            readable, _, _ = select.select([watched], [], [], 0.5)
            if readable:
                break
    finally:
        state.unlink(missing_ok=True)
        engine.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
