"""Results of a benchmark run: the raw numbers, their summary, a table and a JSON file.

The table is for people (rows = measurements, columns = backends, then the same rows as
ratios against `jupyter`, the baseline of DESIGN.md §3); the JSON keeps every sample and the
machine it ran on, so runs can be compared later.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

BASELINE = "jupyter"
MIB = 1 << 20

Kind = Literal["time", "memory"]


@dataclass
class Metric:
    """Samples of one measurement on one backend: seconds (time) or bytes (memory).

    `na` says why the measurement does not apply to the backend; `error` what went wrong.
    """

    kind: Kind
    samples: list[float] = field(default_factory=list)
    na: str | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def stat(self, which: str) -> float | None:
        return summarize(self.samples).get(which) if self.samples else None

    def to_dict(self) -> dict[str, Any]:
        unit = "s" if self.kind == "time" else "bytes"
        return {
            "unit": unit,
            **({"na": self.na} if self.na else {}),
            **({"error": self.error} if self.error else {}),
            **(summarize(self.samples) if self.samples else {}),
            "samples": self.samples,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass
class BackendRun:
    """Everything measured on one backend; `unavailable` says why it could not run at all."""

    name: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    unavailable: str | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.unavailable is not None or any(m.error for m in self.metrics.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "unavailable": self.unavailable,
            "capabilities": self.capabilities,
            "metrics": {key: m.to_dict() for key, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric's statistic under a label."""

    metric: str
    stat: str
    label: str
    compare: bool = True  # show a ratio against the baseline


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of a non-empty list."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "p99": quantile(values, 0.99),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


# --- the table -------------------------------------------------------------------------------


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _unit(kind: Kind) -> str:
    return "ms" if kind == "time" else "MiB"


def _scaled(metric: Metric, stat: str) -> float | None:
    value = metric.stat(stat)
    if value is None:
        return None
    return value * 1000 if metric.kind == "time" else value / MIB


def _cell(run: BackendRun, row: Row) -> str:
    if run.unavailable is not None:
        return "unavailable"
    metric = run.metrics.get(row.metric)
    if metric is None:
        return "-"
    if metric.error is not None:
        return "error"
    value = _scaled(metric, row.stat)
    return "n/a" if value is None else _number(value)


def _ratio(run: BackendRun, base: BackendRun, row: Row) -> str:
    mine, theirs = run.metrics.get(row.metric), base.metrics.get(row.metric)
    if not row.compare or mine is None or theirs is None:
        return ""
    a, b = mine.stat(row.stat), theirs.stat(row.stat)
    if a is None or b is None or a <= 0 or b <= 0:
        return "n/a"
    better, worse = ("faster", "slower") if mine.kind == "time" else ("smaller", "larger")
    return f"{b / a:.1f}x {better}" if b >= a else f"{a / b:.1f}x {worse}"


def _grid(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def _row_kind(runs: list[BackendRun], row: Row) -> Kind:
    for run in runs:
        if row.metric in run.metrics:
            return run.metrics[row.metric].kind
    return "time"


def render_table(runs: list[BackendRun], rows: list[Row]) -> str:
    """The measurements side by side, a `vs jupyter` block, and notes for n/a and errors."""
    header = ["measurement", "unit", *(r.name for r in runs)]
    lines = [
        [row.label, _unit(_row_kind(runs, row)), *(_cell(r, row) for r in runs)] for row in rows
    ]
    parts = [_grid(header, lines)]
    base = next((r for r in runs if r.name == BASELINE and r.unavailable is None), None)
    others = [r for r in runs if r is not base and r.unavailable is None]
    if base is not None and others:
        compared = [row for row in rows if row.compare]
        header = [f"vs {BASELINE} (x = {BASELINE} / backend)", *(r.name for r in others)]
        lines = [[row.label, *(_ratio(r, base, row) for r in others)] for row in compared]
        parts.append(_grid(header, lines))
    notes = _notes(runs)
    if notes:
        parts.append("notes:\n" + "\n".join(f"  - {n}" for n in notes))
    return "\n\n".join(parts)


def _notes(runs: list[BackendRun]) -> list[str]:
    notes = []
    for run in runs:
        if run.unavailable is not None:
            notes.append(f"{run.name}: unavailable: {run.unavailable}")
        for key, metric in run.metrics.items():
            if metric.error is not None:
                notes.append(f"{run.name} {key}: ERROR: {metric.error}")
            elif metric.na is not None:
                notes.append(f"{run.name} {key}: n/a: {metric.na}")
    return notes


# --- machine information and the JSON file ------------------------------------------------------


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(root: Path) -> str | None:
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, Python, library versions, load, code version."""
    packages = ["codeinterp", "numpy", "pandas", "matplotlib", "jupyter_client", "ipykernel"]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "mem_total": _first_line("/proc/meminfo", "MemTotal"),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": {name: _version(name) for name in packages},
        "git": _git_commit(Path(__file__).resolve().parent.parent),
    }


def write_json(
    path: Path,
    runs: list[BackendRun],
    settings: dict[str, Any],
    machine: dict[str, Any],
    *,
    benchmark: str = "executors",
    extra: dict[str, Any] | None = None,
) -> None:
    """All raw samples, their summaries, the settings and `machine` (taken before the run).

    `benchmark` names the script that wrote the file; `extra` adds top-level sections of its own.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": benchmark,
        "machine": machine,
        "settings": settings,
        "backends": {run.name: run.to_dict() for run in runs},
        **(extra or {}),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
