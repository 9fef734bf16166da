"""Run every benchmark and write ``bench/results/report.{md,json}``.

Each ``bench/bench_<name>.py`` exposes ``run(ctx: BenchContext) -> Section``. A section reports
measured figures *and* the baseline measured in the same run, so the ratios mean something on any
machine. Usage: ``python -m bench [--only NAME ...] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bench
from bench.harness import BenchContext, Section

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    import os

    versions = {}
    for name in ("falcon", "gunicorn", "uvicorn", "duckdb", "pyarrow", "polars", "orjson"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:
            versions[name] = "?"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "commit": commit,
        "versions": versions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", help="benchmark names (e.g. ingest warehouse)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()

    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only]
    RESULTS.mkdir(exist_ok=True)
    ctx = BenchContext(quick=args.quick, workdir=RESULTS / "work")
    report = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "sections": {}}
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.bench_{name}")
        section: Section = module.run(ctx)
        section.seconds = round(time.monotonic() - started, 1)
        report["sections"][name] = section.as_dict()
        print(section.markdown(), flush=True)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2))
    md = [f"# Benchmark report ({report['started']})", "", "```", json.dumps(report["machine"], indent=2), "```", ""]
    md += [Section.from_dict(n, s).markdown() for n, s in report["sections"].items()]
    (RESULTS / "report.md").write_text("\n".join(md))
    print(f"report: {RESULTS / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
