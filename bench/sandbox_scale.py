"""The sandbox executor at scale: memory per idle session at N sessions, and many opens.

Run from the repository root:

    .venv/bin/python -m bench.sandbox_scale                  # N = 10,100,300; 1,000 opens
    .venv/bin/python -m bench.sandbox_scale --quick          # N = 5,20; 50 opens (smoke test)
    .venv/bin/python -m bench.sandbox_scale --pool-size 8    # opens again with 8 warm processes

What is measured, in one process and one run (targets: DESIGN.md §3):

1. memory per idle session at N sessions open at once. Sessions are opened one after another
   and kept open; each answers `1+1`, then runs `import numpy, pandas, matplotlib.pyplot` and
   `x = 1` (the template preloaded those, so this is cheap). At each N the PSS of every
   session's process tree is read (bench/procmem.py) and the total divided by N; the
   template's own PSS and the warm pool are reported apart, and "all-in" charges them to the N
   sessions as well. PSS splits each page among the processes mapping it, so the template's
   copy-on-write pages are split N+1 ways: PSS per session falls towards the USS (the pages a
   session owns alone) as N grows. jupyter is measured the same way at the smallest N only
   (10 by default; its kernels are heavy) and the ratio jupyter / sandbox is taken there.
2. opening many sessions: `open()` → value of `1+1`, one after another, `--opens` times. At
   most `--max-open` sessions are kept open (the oldest is closed before opening a new one),
   so memory stays bounded. Reported: wall time, sessions/second, latency median/p90/p99 and
   the median per fifth of the run (does opening slow down as more sessions exist?). Done
   with the executor's default pool size, and again with `--pool-size` if given. jupyter is
   left out here: a thousand kernels at ~0.4 s each say nothing the first measurement doesn't.

Before starting, MemAvailable is read and N is scaled down (with a warning) where N sessions
would not fit. Every session and executor is closed at the end, even on error; then every
process the run saw (sessions, templates, warm pools, kernels) is checked to be gone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.executors import (
    DATA_LIBS_CELL,
    SETTLE_S,
    TRIVIAL_CELL,
    BenchError,
    expect_ok,
    exposed_pid,
    locate_session,
    log,
    open_to_first_result,
    recording,
    run_cell,
)
from bench.procmem import (
    PROC,
    Memory,
    children_map,
    namespace_pid,
    process_memory,
    process_tree,
    tree_memory,
)
from bench.report import (
    MIB,
    BackendRun,
    Metric,
    Row,
    _first_line,
    _grid,
    _number,
    machine_info,
    render_table,
    write_json,
)
from codeinterp.executors import Executor, Session, get_executor

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "sandbox_scale.json"
SANDBOX = "sandbox"
JUPYTER = "jupyter"
IMPORT_CELL = f"{DATA_LIBS_CELL}\n{TRIVIAL_CELL}"

SIZES = [10, 100, 300]
QUICK_SIZES = [5, 20]
OPENS = 1000
QUICK_OPENS = 50
MAX_OPEN = 300  # sessions open at once while opening many; the oldest is closed beyond
JUPYTER_MAX_N = 10  # jupyter is measured at min(this, smallest N)

# The headroom check: what one idle session may take at most, and what stays free for the rest.
ESTIMATE_BYTES = {SANDBOX: 10 * MIB, JUPYTER: 200 * MIB}
RESERVE_BYTES = 1 << 30

GONE_TIMEOUT_S = 10.0  # after closing, how long processes may take to disappear
PROGRESS_EVERY = 50
PARTS = 5  # latency medians per fifth of the opening run

PidOf = Callable[[Session], int]


@dataclass(frozen=True)
class Settings:
    sizes: list[int]  # N: sandbox sessions open at once for the memory measurement
    jupyter_n: int  # jupyter sessions for the comparison (0: none)
    opens: int  # sessions opened one after another
    max_open: int  # at most this many kept open while opening them
    pool_size: int | None  # a second opening run with this pool size (None: default only)
    timeout_s: float  # per cell
    json_path: Path


# --- memory headroom -------------------------------------------------------------------------


def mem_available() -> int | None:
    """MemAvailable in bytes (what can be used without swapping), None if unreadable."""
    value = _first_line("/proc/meminfo", "MemAvailable")
    return int(value.split()[0]) * 1024 if value else None


def fitting(wanted: int, per_session: int, available: int | None) -> int:
    """How many of `wanted` sessions of `per_session` bytes fit, keeping RESERVE_BYTES free."""
    if available is None:
        return wanted
    return max(1, min(wanted, (available - RESERVE_BYTES) // per_session))


def fit_to_memory(settings: Settings, available: int | None) -> tuple[Settings, list[str]]:
    """`settings` with every N scaled down to what MemAvailable allows, and a warning for each.

    Checked up front so that a small machine gets a smaller run rather than the OOM killer
    picking a victim (possibly not one of ours) halfway through.
    """
    warnings: list[str] = []

    def cap(what: str, wanted: int, backend: str) -> int:
        n = fitting(wanted, ESTIMATE_BYTES[backend], available)
        if n < wanted:
            warnings.append(
                f"{what}: {wanted} {backend} sessions x ~{ESTIMATE_BYTES[backend] // MIB} MiB "
                f"do not fit in MemAvailable {(available or 0) // MIB:,} MiB minus "
                f"{RESERVE_BYTES // MIB:,} MiB kept free; using {n}"
            )
        return n

    sizes = sorted({cap(f"N={n}", n, SANDBOX) for n in settings.sizes})
    jupyter_n = cap("jupyter N", settings.jupyter_n, JUPYTER) if settings.jupyter_n else 0
    if jupyter_n and jupyter_n not in sizes:
        sizes = sorted({*sizes, jupyter_n})  # the ratio needs sandbox at the same N
    max_open = cap("most open at once", settings.max_open, SANDBOX)
    fitted = replace(settings, sizes=sizes, jupyter_n=jupyter_n, max_open=max_open)
    return fitted, warnings


# --- processes: which ones we started, and that they are gone --------------------------------


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot, /proc/PID/stat field 22); None if gone.

    A pid together with its start time names one process for good, so a pid the kernel has
    reused for an unrelated process meanwhile is not mistaken for a leftover.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_state(pid: int) -> str:
    """The one-letter state of `pid` (e.g. Z for a zombie nobody reaped), "?" if gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


@dataclass
class ProcessLedger:
    """Every process the run saw (sessions, templates, warm pools, kernels), by pid and start.

    At the end none of them may still exist: that is what "all sessions were closed" means.
    """

    seen: dict[int, int] = field(default_factory=dict)

    def add(self, *pids: int) -> None:
        for pid in pids:
            ticks = start_ticks(pid)
            if ticks is not None:
                self.seen[pid] = ticks

    def remaining(self) -> list[int]:
        return [pid for pid, ticks in self.seen.items() if start_ticks(pid) == ticks]

    def wait_gone(self, timeout_s: float) -> tuple[list[int], float]:
        """The processes still there after up to `timeout_s`, and the seconds waited."""
        start = time.perf_counter()
        while (left := self.remaining()) and time.perf_counter() - start < timeout_s:
            time.sleep(0.05)
        return left, time.perf_counter() - start


def template_pid(executor: Executor) -> int | None:
    """The host pid of the sandbox template (None for executors without one)."""
    process = getattr(getattr(executor, "template", None), "process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def sandbox_pid(session: Session) -> int:
    """A sandbox session's host pid (its `pid`: PID 1 of the session's own pid namespace)."""
    exposed = exposed_pid(session)
    if exposed is None or exposed[0] != "pid":
        raise BenchError("the sandbox session exposes no pid")
    return exposed[1]


def jupyter_pid(timeout_s: float) -> PidOf:
    """Finds a kernel's host pid by asking the kernel (bench.executors.locate_session)."""
    return lambda session: locate_session(session, timeout_s)[0]


# --- executors and sessions that are closed whatever happens ---------------------------------


@contextmanager
def executor_for(
    run: BackendRun, name: str, ledger: ProcessLedger, **options: Any
) -> Iterator[Executor | None]:
    """The executor `name` (None, with `run.unavailable` set, if it cannot be created).

    On exit it is closed, after recording every process it still has (template, warm pool,
    sessions) so that the final check also covers those the benchmark never saw directly.
    """
    try:
        executor = get_executor(name, **options)
    except Exception as exc:  # no sandbox support, no kernel, ...: report it, go on
        run.unavailable = f"{type(exc).__name__}: {exc}"
        log(f"[{run.name}] unavailable: {run.unavailable}")
        executor = None
    if executor is None:
        yield None
        return
    run.capabilities = asdict(executor.capabilities)
    root = template_pid(executor)
    try:
        yield executor
    finally:
        if root is not None:
            ledger.add(*process_tree(root))
        executor.close()


@dataclass
class Live:
    session: Session
    pid: int | None = None


class LiveSessions:
    """Sessions kept open, oldest first; whatever is still open is closed on exit, even on error."""

    def __init__(self, ledger: ProcessLedger) -> None:
        self._ledger = ledger
        self._live: deque[Live] = deque()
        self.close_times: list[float] = []  # seconds per session close
        self.most = 0  # most sessions open at once

    def __len__(self) -> int:
        return len(self._live)

    @property
    def pids(self) -> list[int]:
        return [live.pid for live in self._live if live.pid is not None]

    def add(self, session: Session, pid_of: PidOf) -> None:
        """Keep `session` (closed with the rest even if finding its pid fails), note its pid."""
        live = Live(session)
        self._live.append(live)
        self.most = max(self.most, len(self._live))
        live.pid = pid_of(session)
        self._ledger.add(live.pid)

    def close_oldest(self) -> None:
        live = self._live.popleft()
        start = time.perf_counter()
        live.session.close()
        self.close_times.append(time.perf_counter() - start)

    def close_all(self) -> float:
        """Close every session still open; the seconds it took."""
        start = time.perf_counter()
        while self._live:
            self.close_oldest()
        return time.perf_counter() - start

    def __enter__(self) -> LiveSessions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_all()


# --- (1) memory per idle session at N -----------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Memory read at one moment: each session's tree, the template, the rest of its children."""

    sessions: list[Memory]
    session_processes: list[int]
    template: Memory | None
    warm: Memory  # template children that are no open session: the warm pool
    warm_processes: int
    pid_ns_init: int  # sessions whose pid is PID 1 of a pid namespace


def take_snapshot(pids: list[int], root: int | None) -> Snapshot:
    """Memory of every session tree, the template and its other children (one /proc scan)."""
    children = children_map()
    trees = [tree_memory(pid, children) for pid in pids]
    counted = {pid for _, tree in trees for pid in tree}
    warm = [] if root is None else [p for p in process_tree(root, children)[1:] if p not in counted]
    namespaces = [namespace_pid(pid) for pid in pids]
    return Snapshot(
        sessions=[memory for memory, _ in trees],
        session_processes=sorted(counted),
        template=process_memory(root) if root is not None else None,
        warm=sum((process_memory(pid) for pid in warm), Memory()),
        warm_processes=len(warm),
        pid_ns_init=sum(1 for ns in namespaces if ns is not None and ns[1] == 1),
    )


def store_snapshot(run: BackendRun, n: int, snap: Snapshot, expect_ns_init: bool) -> None:
    """The snapshot at N as metrics: per-session means (= total / N), template, all-in."""
    pss = [float(m.pss) for m in snap.sessions]
    template_pss = snap.template.pss if snap.template is not None else 0
    per_session = Metric("memory", pss)
    per_session.detail = {
        "sessions": n,
        "total_pss": sum(pss),
        "rss_mean": sum(m.rss for m in snap.sessions) / n,
        "processes": len(snap.session_processes),
        "pid_ns_init": snap.pid_ns_init,
    }
    if expect_ns_init and snap.pid_ns_init != n:
        per_session.error = (
            f"only {snap.pid_ns_init} of {n} session pids are PID 1 of their own pid namespace:"
            " the wrong processes may have been measured"
        )
    run.metrics[f"pss@{n}"] = per_session
    run.metrics[f"uss@{n}"] = Metric("memory", [float(m.uss) for m in snap.sessions])
    run.metrics[f"all_in@{n}"] = Metric(
        "memory",
        [(sum(pss) + template_pss + snap.warm.pss) / n],
        detail={"warm_pss": snap.warm.pss, "warm_processes": snap.warm_processes},
    )
    if snap.template is None:
        reason = "no template: every kernel is an interpreter of its own"
        run.metrics[f"template@{n}"] = Metric("memory", na=reason)
    else:
        run.metrics[f"template@{n}"] = Metric(
            "memory",
            [float(template_pss)],
            detail={"rss": snap.template.rss, "uss": snap.template.uss},
        )


def open_idle_session(
    live: LiveSessions, executor: Executor, pid_of: PidOf, timeout_s: float
) -> tuple[float, float]:
    """One more session kept open, with the data libraries imported: (open → 1+1, import) s."""
    session, opened = open_to_first_result(executor, timeout_s)
    live.add(session, pid_of)
    return opened, run_cell(session, IMPORT_CELL, expect_ok, timeout_s)


def measure_memory(
    run: BackendRun,
    executor: Executor,
    sizes: list[int],
    pid_of: PidOf,
    settings: Settings,
    ledger: ProcessLedger,
) -> None:
    """(1) Open sessions up to each N of `sizes` (all kept open) and read memory at each N.

    The opening latency is kept per step (`open@N`: the sessions that took it from the
    previous N to this one), to see whether opening slows down as more sessions exist.
    """
    root = template_pid(executor)
    with (
        LiveSessions(ledger) as live,
        recording(run, "import_cell", Metric("time")) as imports,
    ):
        for n in sizes:
            opens = Metric("time")
            run.metrics[f"open@{n}"] = opens
            while len(live) < n:
                opened, imported = open_idle_session(live, executor, pid_of, settings.timeout_s)
                opens.samples.append(opened)
                imports.samples.append(imported)
                if len(live) % PROGRESS_EVERY == 0 or len(live) == n:
                    log(f"[{run.name}] memory: {len(live)}/{n} sessions open")
            time.sleep(SETTLE_S)  # idle sessions, not ones finishing their cell
            snap = take_snapshot(live.pids, root)
            ledger.add(*snap.session_processes)
            store_snapshot(run, n, snap, expect_ns_init=run.name == SANDBOX)
            log(f"[{run.name}] N={n}: {sum(m.pss for m in snap.sessions) / n / MIB:.1f} MiB")


# --- (2) opening many sessions -------------------------------------------------------------------


def medians_by_part(samples: list[float], parts: int) -> list[float]:
    """The median of each of `parts` consecutive, equal slices of `samples` (in run order)."""
    size = max(1, len(samples) // parts)
    slices = [samples[i * size : (i + 1) * size] for i in range(parts - 1)]
    slices.append(samples[(parts - 1) * size :])
    return [Metric("time", s).stat("median") or 0.0 for s in slices if s]


def measure_opens(
    run: BackendRun, executor: Executor, settings: Settings, ledger: ProcessLedger
) -> None:
    """(2) `opens` sessions one after another (open → 1+1), at most `max_open` open at once.

    The oldest session is closed before a new one is opened once `max_open` are open, so the
    wall time includes those closes; they are reported apart, as is closing the rest after.
    """
    pool_size = getattr(executor, "pool_size", None)
    with (
        LiveSessions(ledger) as live,
        recording(run, "open_latency", Metric("time")) as latency,
    ):
        start = time.perf_counter()
        for i in range(settings.opens):
            while len(live) >= settings.max_open:
                live.close_oldest()
            session, elapsed = open_to_first_result(executor, settings.timeout_s)
            live.add(session, sandbox_pid)
            latency.samples.append(elapsed)
            if (i + 1) % (PROGRESS_EVERY * 4) == 0:
                log(f"[{run.name}] opened {i + 1}/{settings.opens}")
        wall = time.perf_counter() - start
        closing_oldest = sum(live.close_times)
        still_open = len(live)
        close_rest = live.close_all()
        latency.detail["medians_by_fifth"] = medians_by_part(latency.samples, PARTS)
        run.metrics["session_close"] = Metric("time", live.close_times)
        run.metrics["opens_wall"] = Metric(
            "time",
            [wall],
            detail={
                "pool_size": pool_size,
                "opened": settings.opens,
                "most_open": live.most,
                "closing_oldest_s": closing_oldest,
                "sessions_per_s": settings.opens / wall,
                "closed_after": still_open,
                "close_rest_s": close_rest,
            },
        )


# --- all of it ---------------------------------------------------------------------------------


def run_all(settings: Settings, ledger: ProcessLedger) -> list[BackendRun]:
    """sandbox memory, sandbox opens (default pool, then `--pool-size`), jupyter memory last.

    Each part gets a fresh executor. jupyter goes last so that its kernels (and their
    shutdown) cannot disturb the sandbox timings.
    """
    sandbox = BackendRun(SANDBOX)
    runs = [sandbox]
    with executor_for(sandbox, SANDBOX, ledger) as executor:
        if executor is not None:
            measure_memory(sandbox, executor, settings.sizes, sandbox_pid, settings, ledger)
    default_pool: int | None = None
    with executor_for(sandbox, SANDBOX, ledger) as executor:
        if executor is not None:
            default_pool = getattr(executor, "pool_size", None)
            measure_opens(sandbox, executor, settings, ledger)
    if settings.pool_size is not None and settings.pool_size != default_pool:
        pooled = BackendRun(f"{SANDBOX} pool={settings.pool_size}")
        runs.append(pooled)
        with executor_for(pooled, SANDBOX, ledger, pool_size=settings.pool_size) as executor:
            if executor is not None:
                measure_opens(pooled, executor, settings, ledger)
    if settings.jupyter_n:
        jupyter = BackendRun(JUPYTER)
        runs.append(jupyter)
        with executor_for(jupyter, JUPYTER, ledger) as executor:
            if executor is not None:
                pid_of = jupyter_pid(settings.timeout_s)
                measure_memory(jupyter, executor, [settings.jupyter_n], pid_of, settings, ledger)
    return runs


# --- the report ----------------------------------------------------------------------------------


def memory_rows(settings: Settings) -> list[Row]:
    """Table rows for (1); the ratio against jupyter only where jupyter was measured (its N)."""

    def rows(metric: str, stat: str, label: str, compare: bool = True) -> list[Row]:
        return [
            Row(f"{metric}@{n}", stat, label.format(n=n), compare and n == settings.jupyter_n)
            for n in settings.sizes
        ]

    return [
        *rows("pss", "mean", "PSS per idle session (session trees / N), N={n}"),
        *rows("all_in", "mean", "all-in per session (+ template + warm pool), N={n}"),
        *rows("uss", "mean", "USS per session (freed when it closes), N={n}"),
        *rows("template", "mean", "template PSS (once, shared), N={n}", compare=False),
        *rows("open", "median", "open -> 1+1 while growing to N={n}, median"),
        Row("import_cell", "median", "import numpy+pandas+matplotlib; x = 1, median"),
    ]


def _opens_value(run: BackendRun, value: Callable[[Metric, Metric], str]) -> str:
    """One cell of the opening table, or why there is no number."""
    latency, wall = run.metrics.get("open_latency"), run.metrics.get("opens_wall")
    if run.unavailable is not None:
        return "unavailable"
    if latency is None:
        return "-"
    if latency.error is not None or wall is None:
        return "error"
    return value(latency, wall)


def render_opens(runs: list[BackendRun]) -> str:
    """(2) one column per pool size."""

    def ms(stat: str) -> Callable[[Metric, Metric], str]:
        return lambda latency, _: _number((latency.stat(stat) or 0.0) * 1000)

    def detail(key: str, fmt: str) -> Callable[[Metric, Metric], str]:
        return lambda _, wall: format(wall.detail[key], fmt)

    def fifths(latency: Metric, _: Metric) -> str:
        return " / ".join(_number(m * 1000) for m in latency.detail["medians_by_fifth"])

    lines: list[tuple[str, str, Callable[[Metric, Metric], str]]] = [
        ("pool size (warm processes)", "", detail("pool_size", "")),
        ("sessions opened, one after another", "", detail("opened", ",")),
        ("most open at once (oldest closed beyond)", "", detail("most_open", ",")),
        ("wall time, opening all", "s", lambda _, wall: f"{wall.samples[0]:.2f}"),
        ("  of which closing the oldest", "s", detail("closing_oldest_s", ".2f")),
        ("sessions per second (opened / wall)", "1/s", detail("sessions_per_s", ".1f")),
        ("open -> 1+1, median", "ms", ms("median")),
        ("open -> 1+1, p90", "ms", ms("p90")),
        ("open -> 1+1, p99", "ms", ms("p99")),
        ("open -> 1+1, max", "ms", ms("max")),
        ("open -> 1+1, median per fifth of the run", "ms", fifths),
        ("closing the sessions still open after", "s", detail("close_rest_s", ".2f")),
    ]
    header = ["opening sessions", "unit", *(r.name for r in runs)]
    grid = [[label, unit, *(_opens_value(r, value) for r in runs)] for label, unit, value in lines]
    return _grid(header, grid)


def ratios(runs: list[BackendRun], n: int) -> dict[str, float]:
    """jupyter / sandbox per idle session at N = n, for PSS, all-in and USS."""
    by_name = {run.name: run for run in runs}
    sandbox, jupyter = by_name.get(SANDBOX), by_name.get(JUPYTER)
    found: dict[str, float] = {}
    for metric in ("pss", "all_in", "uss"):
        a = sandbox.metrics.get(f"{metric}@{n}") if sandbox else None
        b = jupyter.metrics.get(f"{metric}@{n}") if jupyter else None
        mine, theirs = (a.stat("mean") if a else None), (b.stat("mean") if b else None)
        if mine and theirs:
            found[metric] = theirs / mine
    return found


def cleanup_line(ledger: ProcessLedger, left: list[int], waited_s: float) -> str:
    """Whether any process of the run outlived it, in one line."""
    if not left:
        return (
            f"processes left after closing: none of the {len(ledger.seen):,} recorded "
            f"(sessions, templates, warm pools, kernels) exists ({waited_s:.2f} s after closing)"
        )
    listed = ", ".join(f"{pid} ({process_state(pid)})" for pid in left[:20])
    return f"PROCESSES LEFT after closing ({len(left)} of {len(ledger.seen):,}): {listed}"


def print_report(
    runs: list[BackendRun], settings: Settings, warnings: list[str], cleanup: str
) -> None:
    """Both tables, the jupyter ratio, the warnings and what was left behind."""
    memory_runs = [r for r in runs if r.name in (SANDBOX, JUPYTER)]
    print(f"(1) memory per idle session ({IMPORT_CELL!r} run in each), MiB")
    print(render_table(memory_runs, memory_rows(settings)))
    found = ratios(runs, settings.jupyter_n)
    if found:
        parts = ", ".join(f"{k} {v:.1f}x" for k, v in found.items())
        print(
            f"\njupyter / sandbox per idle session at N={settings.jupyter_n}: {parts} "
            "(DESIGN.md §3 asks >= 20x)"
        )
    print(f"\n(2) opening {settings.opens:,} sessions, keeping at most {settings.max_open} open")
    print(render_opens([r for r in runs if "open_latency" in r.metrics]))
    print()
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(cleanup)


# --- command line --------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 10,100,300")
    return values


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sandbox_scale",
        description="The sandbox executor at scale: memory per idle session, opening many.",
    )
    parser.add_argument("--sizes", type=_int_list, help="N for memory (default 10,100,300)")
    parser.add_argument("--opens", type=int, help="sessions to open one after another (1000)")
    parser.add_argument(
        "--max-open", type=int, default=MAX_OPEN, help="most sessions open at once while opening"
    )
    parser.add_argument(
        "--pool-size", type=int, help="open them again with this pool size (default pool only)"
    )
    parser.add_argument(
        "--jupyter-sessions",
        type=int,
        help=f"jupyter N for the comparison (default min({JUPYTER_MAX_N}, smallest N); 0: none)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per cell")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--quick", action="store_true", help=f"N = {QUICK_SIZES}, {QUICK_OPENS} opens"
    )
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else SIZES)))
    jupyter_n = args.jupyter_sessions
    return Settings(
        sizes=sizes,
        jupyter_n=min(JUPYTER_MAX_N, sizes[0]) if jupyter_n is None else max(0, jupyter_n),
        opens=max(1, args.opens or (QUICK_OPENS if args.quick else OPENS)),
        max_open=max(1, args.max_open),
        pool_size=args.pool_size,
        timeout_s=args.timeout,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    """Run it, print the tables, write the JSON. 0 if everything worked and nothing is left."""
    requested = parse_args(argv)
    available = mem_available()
    settings, warnings = fit_to_memory(requested, available)
    for warning in warnings:
        log(f"WARNING: {warning}")
    machine = machine_info()
    ledger = ProcessLedger()
    try:
        runs = run_all(settings, ledger)
    finally:
        left, waited = ledger.wait_gone(GONE_TIMEOUT_S)
        cleanup = cleanup_line(ledger, left, waited)
        log(cleanup)
    print_report(runs, settings, warnings, cleanup)
    doc = {**asdict(settings), "json_path": str(settings.json_path), "import_cell": IMPORT_CELL}
    extra = {
        "headroom": {
            "mem_available": available,
            "estimate_bytes_per_session": ESTIMATE_BYTES,
            "reserve_bytes": RESERVE_BYTES,
            "requested": {**asdict(requested), "json_path": str(requested.json_path)},
            "warnings": warnings,
        },
        "ratios_jupyter_over_sandbox": ratios(runs, settings.jupyter_n),
        "cleanup": {
            "recorded": len(ledger.seen),
            "left": {pid: process_state(pid) for pid in left},
            "waited_s": waited,
        },
    }
    write_json(settings.json_path, runs, doc, machine, benchmark="sandbox_scale", extra=extra)
    print(f"raw numbers: {settings.json_path}")
    return 1 if left or any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
