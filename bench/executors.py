"""Executor backends side by side: session start, cell round trip, output, plots, memory.

Run from the repository root:

    .venv/bin/python -m bench.executors                       # every available backend
    .venv/bin/python -m bench.executors --executors repl,jupyter --repeat 10
    .venv/bin/python -m bench.executors --quick               # a fast smoke run
    CODEINTERP_GATEWAY_TOKEN=... .venv/bin/python -m bench.executors --gateway-url URL
                                                              # also kernels on a Kernel Gateway

What is measured, per backend, in one process and one run (DESIGN.md §3 sets the targets):

1. new session → first result: wall time from `executor.open()` until `execute("1+1")`
   returned its value, i.e. what a user waits for before their first cell can answer. The
   very first session of the run is reported on its own ("cold") and kept out of the median:
   it pays one-off costs (imports in this process, disk caches) that later sessions don't.
2. trivial cell round trip: `execute("x = 1")` in one warm session: the fixed cost of a cell.
3. printing 1 MiB: `execute("print('x' * (1 << 20))")`: moving output from the interpreter.
4. one plot: `plt.plot(...); plt.show()` coming back as a PNG, after the import was done once.
5. memory per idle session: N sessions open at once, each having imported numpy, pandas and
   matplotlib.pyplot; then the PSS of each session's process tree. Each session is asked for
   its own pid by running code (and its pid namespace, so a sandboxed session is found too).

Fixed costs are reported as well: creating the executor, closing a session, closing the
executor. Everything goes through the public executor contract only (`get_executor`, `open`,
`execute`, `close`); timings are wall-clock `perf_counter` around those calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procmem import Memory, host_pid, tree_memory
from bench.report import BackendRun, Metric, Row, machine_info, render_table, write_json
from codeinterp.executors import Executor, Session, available_executors, get_executor
from codeinterp.outputs import Execution

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "executors.json"
# Others (e.g. sandbox) come first.
COLUMN_ORDER = ["repl", "subprocess", "inprocess", "jupyter", "gateway"]

FIRST_RESULT_CELL = "1+1"
TRIVIAL_CELL = "x = 1"
PRINT_CELL = "print('x' * (1 << 20))"
PLOT_IMPORT_CELL = "import matplotlib.pyplot as plt"
PLOT_CELL = "import matplotlib.pyplot as plt; plt.plot([1,2,3]); plt.show()"
DATA_LIBS_CELL = "import numpy, pandas, matplotlib.pyplot"
PID_CELL = (
    "import os; print(os.getpid(), os.readlink('/proc/self/ns/pid') "
    "if os.path.exists('/proc/self/ns/pid') else '-')"
)
WARMUP_CELLS = 3  # untimed trivial cells before the timed ones
SETTLE_S = 1.0  # pause before reading memory, so sessions are idle, not finishing a cell

ROWS = [
    Row("executor_setup", "median", "executor setup (get_executor)", compare=False),
    Row("first_session", "median", "first session of the run, cold (open → 1+1)"),
    Row("new_session", "median", "new session → first result, median"),
    Row("new_session", "p90", "new session → first result, p90"),
    Row("session_close", "median", "session close, median", compare=False),
    Row("trivial_cell", "median", "trivial cell `x = 1`, median"),
    Row("trivial_cell", "p90", "trivial cell `x = 1`, p90"),
    Row("print_1mib", "median", "print 1 MiB, median"),
    Row("plot", "median", "one plot → PNG, median"),
    Row("import_data_libs", "median", "import numpy+pandas+matplotlib, median"),
    Row("memory_per_session", "mean", "memory per idle session (PSS), mean"),
    Row("executor_close", "median", "executor close", compare=False),
]


class BenchError(Exception):
    """A cell did not produce what the measurement expects; its timing would be meaningless."""


@dataclass(frozen=True)
class Settings:
    executors: list[str] | None  # None: every available backend
    repeat: int  # session starts, 1 MiB prints, plots
    cells: int  # trivial cells
    sessions: int  # sessions open at once for the memory measurement
    timeout_s: float  # per cell
    json_path: Path
    gateway_url: str | None = None  # the `gateway` backend's; its token: $CODEINTERP_GATEWAY_TOKEN


# --- checks: what each timed cell must have produced -----------------------------------------

Check = Callable[[Execution], None]


def _describe(execution: Execution) -> str:
    if execution.error is not None:
        return f"{execution.error.ename}: {execution.error.evalue}"
    if execution.timed_out or execution.lost:
        return f"timed_out={execution.timed_out} lost={execution.lost}"
    return f"outputs={[type(o).__name__ for o in execution.outputs]}"


def expect_ok(execution: Execution) -> None:
    if not execution.ok:
        raise BenchError(f"the cell failed: {_describe(execution)}")


def expect_value(text: str) -> Check:
    def check(execution: Execution) -> None:
        expect_ok(execution)
        if execution.result is None or execution.result.text != text:
            raise BenchError(f"expected the value {text!r}, got {_describe(execution)}")

    return check


def expect_printed(char: str, count: int) -> Check:
    """`count` copies of `char` on stdout; those cut by the output cap were still produced.

    The cap (head + tail kept, a marker in between) is the backend's normal behaviour, so the
    copies kept plus `truncated_chars` must add up to what the cell printed.
    """

    def check(execution: Execution) -> None:
        expect_ok(execution)
        got = execution.stdout.count(char) + execution.truncated_chars
        if got != count:
            raise BenchError(f"expected {count} {char!r} on stdout, got {got}")

    return check


def expect_png(execution: Execution) -> None:
    expect_ok(execution)
    if not execution.images("image/png"):
        raise BenchError(f"expected an image/png output, got {_describe(execution)}")


# --- timing primitives -------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute_timed(
    session: Session, code: str, check: Check, timeout_s: float
) -> tuple[float, Execution]:
    """Seconds for one `execute` call and what it produced, after checking that."""
    start = time.perf_counter()
    execution = session.execute(code, timeout_s=timeout_s)
    elapsed = time.perf_counter() - start
    check(execution)
    return elapsed, execution


def run_cell(session: Session, code: str, check: Check, timeout_s: float) -> float:
    """Seconds for one checked `execute` call."""
    return execute_timed(session, code, check, timeout_s)[0]


def open_to_first_result(executor: Executor, timeout_s: float) -> tuple[Session, float]:
    """A new session and the seconds from `open()` to the value of `1+1`."""
    start = time.perf_counter()
    session = executor.open()
    try:
        execution = session.execute(FIRST_RESULT_CELL, timeout_s=timeout_s)
        elapsed = time.perf_counter() - start
        expect_value("2")(execution)
    except BaseException:
        session.close()
        raise
    return session, elapsed


def close_timed(session: Session) -> float:
    start = time.perf_counter()
    session.close()
    return time.perf_counter() - start


@contextmanager
def recording(run: BackendRun, key: str, metric: Metric) -> Iterator[Metric]:
    """Store `metric` under `key`; an exception becomes its error instead of ending the run."""
    run.metrics[key] = metric
    try:
        yield metric
    except Exception as exc:  # one failed measurement must not hide the rest
        metric.error = f"{type(exc).__name__}: {exc}"
        log(f"[{run.name}] {key}: {metric.error}")


# --- the measurements --------------------------------------------------------------------------


def measure_sessions(run: BackendRun, executor: Executor, settings: Settings) -> None:
    """(1) cold first session, then `repeat` new sessions: open → 1+1; and their close."""
    closes = Metric("time")
    run.metrics["session_close"] = closes
    with recording(run, "first_session", Metric("time")) as first:
        log(f"[{run.name}] first session (cold)")
        session, elapsed = open_to_first_result(executor, settings.timeout_s)
        first.samples.append(elapsed)
        closes.detail["cold_close_s"] = close_timed(session)
    with recording(run, "new_session", Metric("time")) as starts:
        for i in range(settings.repeat):
            log(f"[{run.name}] new session {i + 1}/{settings.repeat}")
            session, elapsed = open_to_first_result(executor, settings.timeout_s)
            starts.samples.append(elapsed)
            closes.samples.append(close_timed(session))


def measure_warm_cells(run: BackendRun, executor: Executor, settings: Settings) -> None:
    """(2) trivial cells, (3) 1 MiB prints, (4) plots, all in one warm session."""
    try:
        session, _ = open_to_first_result(executor, settings.timeout_s)
    except Exception as exc:
        for key in ("trivial_cell", "print_1mib", "plot"):
            run.metrics[key] = Metric("time", error=f"could not open a session: {exc}")
        return
    timeout = settings.timeout_s
    try:
        with recording(run, "trivial_cell", Metric("time")) as trivial:
            log(f"[{run.name}] {settings.cells} trivial cells")
            for _ in range(WARMUP_CELLS):
                run_cell(session, TRIVIAL_CELL, expect_ok, timeout)
            for _ in range(settings.cells):
                trivial.samples.append(run_cell(session, TRIVIAL_CELL, expect_ok, timeout))
        with recording(run, "print_1mib", Metric("time")) as prints:
            log(f"[{run.name}] {settings.repeat} prints of 1 MiB")
            check = expect_printed("x", 1 << 20)
            for _ in range(settings.repeat):
                elapsed, execution = execute_timed(session, PRINT_CELL, check, timeout)
                prints.samples.append(elapsed)
                # The output cap (head + tail kept) cuts this many; they were still moved.
                prints.detail["truncated_chars"] = execution.truncated_chars
        with recording(run, "plot", Metric("time")) as plots:
            log(f"[{run.name}] {settings.repeat} plots")
            plots.detail["warmup_import_s"] = run_cell(
                session, PLOT_IMPORT_CELL, expect_ok, timeout
            )
            for _ in range(settings.repeat):
                plots.samples.append(run_cell(session, PLOT_CELL, expect_png, timeout))
    finally:
        session.close()


def session_memory_na(run: BackendRun) -> str | None:
    """Why per-session memory cannot be measured on this backend, or None if it can."""
    if run.name == "gateway":
        return "kernels are the gateway's processes, possibly on another host"
    if not run.capabilities.get("separate_process", True):
        return "sessions run inside the caller's process; there is no session process to measure"
    if not run.capabilities.get("stateful", True):
        return "no idle process: every cell runs in a fresh interpreter that exits afterwards"
    return None


def exposed_pid(session: Session) -> tuple[str, int] | None:
    """A pid the session exposes as a public attribute (repl: `pid`, jupyter: `kernel_pid`).

    Not part of the contract, so it is only a cross-check and a fallback for `locate_session`.
    """
    for attribute in ("pid", "kernel_pid"):
        value = getattr(session, attribute, None)
        if isinstance(value, int):
            return attribute, value
    return None


def locate_session(session: Session, timeout_s: float) -> tuple[int, str]:
    """The host pid of the session's interpreter, asked of the session itself, and how found."""
    execution = session.execute(PID_CELL, timeout_s=timeout_s)
    expect_ok(execution)
    reported, namespace = execution.stdout.split()
    pid = host_pid(int(reported), None if namespace == "-" else namespace, ancestor=os.getpid())
    if pid is not None:
        return pid, "cell"
    exposed = exposed_pid(session)
    if exposed is not None:
        return exposed[1], f"attribute {exposed[0]}"
    raise BenchError(f"cannot find the process of a session that reports pid {reported}")


def measure_memory(run: BackendRun, executor: Executor, settings: Settings) -> None:
    """(5) N idle sessions with numpy, pandas, matplotlib loaded: PSS of each process tree."""
    reason = session_memory_na(run)
    if reason is not None:
        run.metrics["import_data_libs"] = Metric("time", na=reason)
        run.metrics["memory_per_session"] = Metric("memory", na=reason)
        return
    sessions: list[Session] = []
    try:
        with recording(run, "import_data_libs", Metric("time")) as imports:
            for i in range(settings.sessions):
                log(f"[{run.name}] memory: session {i + 1}/{settings.sessions}, importing")
                session, _ = open_to_first_result(executor, settings.timeout_s)
                sessions.append(session)
                imports.samples.append(
                    run_cell(session, DATA_LIBS_CELL, expect_ok, settings.timeout_s)
                )
        with recording(run, "memory_per_session", Metric("memory")) as memory:
            if len(sessions) < settings.sessions:
                raise BenchError("not every session could import the libraries")
            located = [locate_session(s, settings.timeout_s) for s in sessions]
            time.sleep(SETTLE_S)
            memory.detail["sessions"] = [
                {**_session_memory(pid, how), "exposed_pid": exposed_pid(session)}
                for (pid, how), session in zip(located, sessions, strict=True)
            ]
            memory.samples = [float(s["pss"]) for s in memory.detail["sessions"]]
            memory.detail["total_pss"] = sum(memory.samples)
    finally:
        for session in sessions:
            session.close()


def _session_memory(pid: int, found_by: str) -> dict[str, Any]:
    total, pids = tree_memory(pid)
    return {"pid": pid, "found_by": found_by, "processes": pids, **_memory_dict(total)}


def _memory_dict(memory: Memory) -> dict[str, int]:
    return {"pss": memory.pss, "rss": memory.rss, "uss": memory.uss}


# --- one backend, then all of them ---------------------------------------------------------------


def create_executor(run: BackendRun, settings: Settings) -> Executor | None:
    """The executor through `get_executor`, timed; None (and `run.unavailable`) if it fails."""
    options: dict[str, Any] = {}
    if run.name == "gateway":
        if settings.gateway_url is None:
            run.unavailable = "needs --gateway-url URL (a running Jupyter Kernel Gateway)"
            return None
        token = os.environ.get("CODEINTERP_GATEWAY_TOKEN")
        options = {"url": settings.gateway_url, "token": token}
    start = time.perf_counter()
    try:
        executor = get_executor(run.name, **options)
    except Exception as exc:  # missing extras, no kernel, ...: report it, go on
        run.unavailable = f"{type(exc).__name__}: {exc}"
        return None
    run.metrics["executor_setup"] = Metric("time", [time.perf_counter() - start])
    run.capabilities = asdict(executor.capabilities)
    return executor


def measure_backend(run: BackendRun, executor: Executor, settings: Settings) -> None:
    """Every measurement on one backend, then the executor's close, timed."""
    try:
        measure_sessions(run, executor, settings)
        measure_warm_cells(run, executor, settings)
        measure_memory(run, executor, settings)
    finally:
        start = time.perf_counter()
        executor.close()
        run.metrics["executor_close"] = Metric("time", [time.perf_counter() - start])


def default_executors() -> list[str]:
    """Every registered backend: extra ones (e.g. sandbox) first, then COLUMN_ORDER's."""
    names = set(available_executors())
    return sorted(names - set(COLUMN_ORDER)) + [n for n in COLUMN_ORDER if n in names]


def run_all(names: list[str], settings: Settings) -> list[BackendRun]:
    """Measure each backend in turn; those running in this process go last.

    An in-process backend imports numpy/matplotlib into this very process and may leave
    threads behind, so it must not run before the backends whose numbers it could disturb.
    """
    runs = [BackendRun(name) for name in names]
    executors = {run.name: create_executor(run, settings) for run in runs}
    in_caller = [r for r in runs if not r.capabilities.get("separate_process", True)]
    for run in [r for r in runs if r not in in_caller] + in_caller:
        executor = executors[run.name]
        if executor is not None:
            measure_backend(run, executor, settings)
        else:
            log(f"[{run.name}] unavailable: {run.unavailable}")
    return runs


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Settings, bool]:
    """The settings, and whether the backends were named explicitly."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.executors",
        description="Benchmark executor backends side by side (DESIGN.md §3).",
    )
    parser.add_argument(
        "--executors",
        help="comma-separated backend names (default: every available one: "
        f"{','.join(default_executors())})",
    )
    parser.add_argument(
        "--repeat", type=int, help="session starts, 1 MiB prints and plots (default 5, quick 2)"
    )
    parser.add_argument("--cells", type=int, help="trivial cells (default 10 x --repeat)")
    parser.add_argument(
        "--sessions", type=int, help="sessions open at once for memory (default 5, quick 2)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per cell")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument(
        "--gateway-url",
        metavar="URL",
        help="measure the gateway backend on this Jupyter Kernel Gateway (token: "
        "$CODEINTERP_GATEWAY_TOKEN); start it with "
        "--ZMQChannelsWebsocketConnection.limit_rate=False or it drops the 1 MiB print",
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 5)
    names = [n.strip() for n in args.executors.split(",") if n.strip()] if args.executors else None
    settings = Settings(
        executors=names,
        repeat=max(1, repeat),
        cells=max(1, args.cells or 10 * repeat),
        sessions=max(1, args.sessions or (2 if args.quick else 5)),
        timeout_s=args.timeout,
        json_path=args.json,
        gateway_url=args.gateway_url,
    )
    return settings, names is not None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON. 0 if every measurement worked.

    A backend that cannot be created is skipped with its reason when backends were not named;
    when it was asked for by name, the run reports it and returns 1.
    """
    settings, explicit = parse_args(argv)
    machine = machine_info()
    runs = run_all(settings.executors or default_executors(), settings)
    shown = runs if explicit else [r for r in runs if r.unavailable is None]
    skipped = [r for r in runs if r not in shown]
    print(render_table(shown, ROWS))
    for run in skipped:
        print(f"  - {run.name}: skipped, unavailable: {run.unavailable}")
    print(
        f"\nmachine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, {machine['date']}; "
        f"repeat={settings.repeat}, cells={settings.cells}, sessions={settings.sessions}"
    )
    write_json(settings.json_path, runs, _settings_dict(settings), machine)
    print(f"raw numbers: {settings.json_path}")
    return 1 if any(r.failed for r in shown) else 0


def _settings_dict(settings: Settings) -> dict[str, Any]:
    doc = asdict(settings)
    doc["json_path"] = str(settings.json_path)
    doc["cells_code"] = {
        "first_result": FIRST_RESULT_CELL,
        "trivial": TRIVIAL_CELL,
        "print_1mib": PRINT_CELL,
        "plot": PLOT_CELL,
        "data_libs": DATA_LIBS_CELL,
    }
    doc["warmup_trivial_cells"] = WARMUP_CELLS
    doc["settle_s"] = SETTLE_S
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
