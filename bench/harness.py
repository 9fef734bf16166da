"""What benchmarks share: sizes, a work directory, a result section with ratios and targets."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class BenchContext:
    quick: bool
    workdir: Path

    def fresh_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass
class Row:
    """One measured figure, its baseline from the same run, and the target it must meet."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, name: str, value: float, unit: str, baseline: float | None = None,
            target: str = "", met: bool | None = None) -> Row:
        row = Row(name, value, unit, baseline, target, met)
        self.rows.append(row)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": self.seconds,
            "notes": self.notes,
            "rows": [
                {"name": r.name, "value": r.value, "unit": r.unit, "baseline": r.baseline,
                 "ratio": r.ratio, "target": r.target, "met": r.met}
                for r in self.rows
            ],
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> Section:
        s = cls(data["title"], notes=data.get("notes", []), seconds=data.get("seconds", 0))
        for r in data["rows"]:
            s.rows.append(Row(r["name"], r["value"], r["unit"], r["baseline"], r["target"], r["met"]))
        return s

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| measure | value | baseline | ratio | target | met |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in self.rows:
            ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
            base = f"{r.baseline:,.1f}" if r.baseline is not None else ""
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            lines.append(f"| {r.name} | {r.value:,.1f} {r.unit} | {base} | {ratio} | {r.target} | {met} |")
        lines += [""] + [f"- {n}" for n in self.notes] + [f"\n_{self.seconds:.0f} s_", ""]
        return "\n".join(lines)


# A wrk Lua ``done`` hook that prints the summary as one JSON line (``%%`` because the scripts that
# embed it are %-formatted).
WRK_DONE_LUA = r"""
done = function(summary, latency, requests)
  io.write(string.format("JSON{\"requests\":%%d,\"duration_us\":%%d,\"errors\":%%d,\"non2xx\":%%d,\"p50_us\":%%d,\"p99_us\":%%d}\n",
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system) each still-running process has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def _machine_cpu() -> list[int]:
    """The machine's CPU time per state, all cores (``/proc/stat``), in clock ticks."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; not idle, not waiting for I/O)."""
    fields = _machine_cpu()
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def machine_idle() -> float:
    """CPU seconds the whole machine has been idle, or waiting for I/O (all cores)."""
    fields = _machine_cpu()
    return (fields[3] + fields[4]) / os.sysconf("SC_CLK_TCK")


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each measure's mean over ``runs`` (dicts with the same keys)."""
    return {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}


def in_turn(round_number: int, *conditions: T) -> tuple[T, ...]:
    """The order of the conditions in a round: each of their orders in turn (A B, B A, … for two;
    the six orders of three), so that a drift in the shared machine's background load hits all
    alike and each condition comes first, second, … as often."""
    orders = list(itertools.permutations(conditions))
    return orders[round_number % len(orders)]


def wait_while_busy(cpu_seconds: Callable[[], float], below: float, timeout: float) -> None:
    """Return once ``cpu_seconds()`` (CPU used so far by what is watched) grows by less than
    ``below`` seconds in half a second, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    used = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds()
        if now - used < below:
            return
        used = now


def run_wrk(url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    """Run wrk with a script ending in ``WRK_DONE_LUA``; its summary plus ``rps``."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"JSON(\{.*\})", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    data: dict[str, float] = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data
