"""`codeinterp serve` under load: many sessions running cells at once over the real HTTP API.

Run from the repository root:

    .venv/bin/python -m bench.http_load                      # 100 sessions x 100 cells
    .venv/bin/python -m bench.http_load --quick              # 10 x 10 (smoke test)
    .venv/bin/python -m bench.http_load --sessions 50 --cells 20 --json /tmp/out.json

A real server is started as a subprocess (`python -m codeinterp.cli serve`, default executor:
sandbox) on a free loopback port, with a fresh temporary --db and --data-dir and its own token.
What is measured, in one run:

1. Load. N sessions are created over HTTP (all at once), then every session runs M cells, all
   sessions concurrently, each one cell after another on its own keep-alive connection
   (`POST /api/sessions/{id}/execute`). Cell c of session s prints a value that only it can
   print (`print("Ls17-c42", 17 * 1000000 + 42)`), and every reply is checked to hold exactly
   that output and no other cell's marker: a reply is *ok*, *lost* (transport error, timeout,
   non-200 status, unreadable body), *mixed* (it carries another cell's marker: outputs were
   crossed between sessions or cells) or *wrong* (anything else, e.g. an error or no output).
   Lost, mixed and wrong must all be 0. Per-cell latency is the wall time from sending the
   request to having read the whole reply; p50/p90/p99/max are taken over the cells that got a
   reply. Throughput is cells per second of the wall time from the first cell sent to the last
   reply read.
2. Baseline, in the same run: the same N x M workload on `get_executor("sandbox")` in this
   process (N sessions, one thread per session, all starting together), checked the same way.
   The ratio HTTP / direct for p50 and p99 is the cost of the service: HTTP, JSON, FastAPI,
   its worker threads.
3. Faults. A smaller load (default 20 sessions x 50 cells, in sessions of its own) is run twice:
   clean (after one untimed warm-up cell per session), then while two more sessions misbehave:
   one floods output (`while True: print('x' * 10000)`), one never ends (`while True: pass`),
   both with `timeout_s` 10 in the execute body. The faulty cells are started first and the load
   only once both sessions report `busy`. Reported: the normal cells' p50/p90/p99/max with and
   without the faulty neighbours and their ratio (how much one session's misbehaviour costs the
   others), how many normal cells ran inside the faults' window, and for each faulty cell
   whether it came back with `timed_out` true, how long it took, and (the flood) how much output
   the reply kept: it must be capped (the executor's cap, `truncated_chars` > 0). Afterwards
   each faulty session must answer `1+1` again.
4. Clean-up. Every session is deleted (204 expected; then `GET /api/sessions` must be empty),
   the server gets SIGTERM, then SIGKILL if it has not exited after 10 s. Every process the
   server ever had (sampled once a second during the run, and just before the stop: template,
   warm pool, sessions) must then be gone; a pid counts as the same process only with the same
   start time. Leftovers are reported (and killed, since this run started them).

Reading the numbers: every session sends its next cell as soon as the last one returns (a
closed loop), so once the server is saturated a cell's latency is mostly queueing, about
N / throughput (Little's law); the p50 ratio HTTP / direct then mirrors the throughput ratio.
Other programs on the machine distort all of it: the CPU they used is reported per phase, and a
warning is printed when it exceeds a tenth of the machine.

The client is a minimal HTTP/1.1 client on asyncio streams, one event loop in this process.
It shares the machine's cores with the server, so it must cost as little as possible: on a
2-core VM, httpx.AsyncClient with 50 connections spent ~2-3 ms of CPU per request and capped
the run at ~200-300 requests/s (it measured httpx, not the server), where this client spends
~0.1 ms. The CPU time of the client (this process), the server process and the session
processes is reported per phase, with how busy the machine's cores were, so a reader can see
who was using the CPU. Session CPU is summed over the session processes alive at the end of a
phase, so processes that died during it (a killed faulty session) are not counted.

The server runs as deployed: uvicorn's access log is on (written to a file in the temporary
directory); its error lines and the HTTP statuses it logged are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.executors import SETTLE_S, log
from bench.procmem import PROC, process_tree
from bench.report import (
    MIB,
    BackendRun,
    Metric,
    Row,
    _grid,
    _number,
    machine_info,
    render_table,
    summarize,
    write_json,
)
from bench.sandbox_scale import ProcessLedger, process_state
from codeinterp.executors import Session, get_executor
from codeinterp.executors.base import DEFAULT_MAX_OUTPUT_CHARS
from codeinterp.outputs import Execution

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "http_load.json"
HOST = "127.0.0.1"
EXECUTOR = "sandbox"  # the server's default; the direct baseline uses the same

# The first letter of every cell marker: main load, fault phase's warm-up, clean and faulty runs.
LOAD_TAG, WARMUP_TAG, CLEAN_TAG, FAULT_TAG = "L", "W", "C", "F"
CELL_FACTOR = 1_000_000  # the printed value is session * CELL_FACTOR + cell
MARKER = re.compile(r"\b[A-Z]s\d+-c\d+\b")
OUTCOMES = ("ok", "lost", "mixed", "wrong")

FLOOD_CELL = "while True: print('x' * 10000)"
SPIN_CELL = "while True: pass"
FAULT_TIMEOUT_S = 10.0
RECOVERY_CELL = "1+1"
BUSY_WAIT_S = 10.0  # the faulty cells must be running before the load starts
OUTPUT_CAP_SLACK = 1_000  # the cap's truncation marker may add a few characters

START_TIMEOUT_S = 60.0  # for the server to answer GET /api/info
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this
LEFTOVER_WAIT_S = 5.0  # for the server's processes to vanish after it exited
WATCH_INTERVAL_S = 1.0  # sampling of the server's process tree
KEEPALIVE_S = 4.0  # reconnect rather than reuse a connection idle this long (uvicorn closes at 5)
LOG_LINES_KEPT = 20


@dataclass(frozen=True)
class Settings:
    sessions: int
    cells: int
    fault_sessions: int
    fault_cells: int
    request_timeout_s: float  # a reply slower than this is lost
    json_path: Path
    quick: bool


# --- cells and what their replies must hold --------------------------------------------------


def marker(tag: str, session: int, cell: int) -> str:
    return f"{tag}s{session}-c{cell}"


def cell_code(tag: str, session: int, cell: int) -> str:
    """A cell whose output only it can produce: its marker and a value computed when it runs."""
    return f'print("{marker(tag, session, cell)}", {session} * {CELL_FACTOR} + {cell})'


def expected_stdout(tag: str, session: int, cell: int) -> str:
    return f"{marker(tag, session, cell)} {session * CELL_FACTOR + cell}\n"


def describe(execution: Execution) -> str:
    if execution.error is not None:
        return f"{execution.error.ename}: {execution.error.evalue}"
    if execution.timed_out or execution.lost:
        return f"timed_out={execution.timed_out} lost={execution.lost}"
    return f"stdout={execution.stdout[:80]!r}, {len(execution.outputs)} outputs"


def judge(execution: Execution, text: str, tag: str, session: int, cell: int) -> tuple[str, str]:
    """The outcome of one reply (ok, mixed or wrong) and a note saying why.

    `text` is everything the reply carried (the HTTP body, or the execution as JSON), searched
    for markers of other cells; the output itself must be exactly one stdout stream with the
    expected text.
    """
    own = marker(tag, session, cell)
    others = sorted(set(MARKER.findall(text)) - {own})
    if others:
        return "mixed", f"carries {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}"
    expected = expected_stdout(tag, session, cell)
    only_stdout = len(execution.outputs) == 1 and execution.stdout == expected
    if execution.ok and only_stdout:
        return "ok", ""
    return "wrong", describe(execution)


@dataclass
class CellResult:
    session: int
    cell: int
    started: float  # perf_counter when the request was sent
    latency_s: float
    outcome: str
    note: str = ""


@dataclass
class Load:
    """One N x M workload: every cell's result, the wall time and who used the CPU meanwhile."""

    tag: str
    sessions: int
    cells: int
    started: float = 0.0  # perf_counter of the first cell sent
    wall_s: float = 0.0
    results: list[CellResult] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        """Latency of every cell that got a reply (lost ones have no meaningful latency)."""
        return [r.latency_s for r in self.results if r.outcome != "lost"]

    def counts(self) -> dict[str, int]:
        counted = Counter(r.outcome for r in self.results)
        return {outcome: counted.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s > 0 else 0.0

    def stat(self, which: str) -> float | None:
        return summarize(self.latencies).get(which) if self.latencies else None

    def within(self, start: float, end: float) -> list[float]:
        """Latencies of the answered cells sent between `start` and `end` (perf_counter)."""
        return [
            r.latency_s for r in self.results if r.outcome != "lost" and start <= r.started <= end
        ]

    def problems(self, label: str) -> list[str]:
        counts = self.counts()
        found = [f"{label}: {counts[o]} {o} replies" for o in OUTCOMES[1:] if counts[o]]
        examples = [r for r in self.results if r.outcome != "ok"][:5]
        found += [
            f"  e.g. session {r.session} cell {r.cell}: {r.outcome}: {r.note}" for r in examples
        ]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "cells_per_session": self.cells,
            "wall_s": self.wall_s,
            "throughput_cells_per_s": self.throughput,
            "outcomes": self.counts(),
            "latency": {"unit": "s", **(summarize(self.latencies) if self.latencies else {})},
            "cpu": self.cpu,
            **self.extra,
            "not_ok": [asdict(r) | {"started": r.started - self.started}
                       for r in self.results if r.outcome != "ok"],
            # every cell, in order of sending: session, cell, seconds after the first, latency
            "cells": [[r.session, r.cell, round(r.started - self.started, 6), round(r.latency_s, 7)]
                      for r in sorted(self.results, key=lambda r: r.started)],
        }  # fmt: skip


# --- CPU: who used it during a phase -----------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (its threads included), None if it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15: utime, stime


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    wall: float
    client: float  # this process
    server: float | None  # the server process (None: no server)
    sessions: dict[int, float]  # every process under `root` but `root` and this process
    machine: tuple[int, int]

    @classmethod
    def take(cls, root: int | None) -> CpuSnapshot:
        sessions: dict[int, float] = {}
        if root is not None:
            for pid in process_tree(root):
                if pid not in (root, os.getpid()):
                    cpu = process_cpu_s(pid)
                    if cpu is not None:
                        sessions[pid] = cpu
        server = process_cpu_s(root) if root is not None and root != os.getpid() else None
        return cls(time.perf_counter(), time.process_time(), server, sessions, machine_cpu())

    def since(self, before: CpuSnapshot) -> dict[str, float | None]:
        busy = self.machine[0] - before.machine[0]
        total = self.machine[1] - before.machine[1]
        cores = len(os.sched_getaffinity(0))
        server = (
            self.server - before.server
            if self.server is not None and before.server is not None
            else None
        )
        client = self.client - before.client
        sessions = sum(cpu - before.sessions.get(pid, 0.0) for pid, cpu in self.sessions.items())
        machine = busy / CLK_TCK
        return {
            "wall_s": self.wall - before.wall,
            "client_cpu_s": client,
            "server_cpu_s": server,
            "sessions_cpu_s": sessions,
            "machine_busy_cores": busy / total * cores if total else None,
            "machine_busy_cpu_s": machine,
            # whatever else ran on the machine meanwhile (other programs, the kernel's threads)
            "other_cpu_s": max(0.0, machine - client - (server or 0.0) - sessions),
        }


def background_load(seconds: float = 1.0) -> float:
    """Cores kept busy by the rest of the machine over `seconds`, before the run starts."""
    before = machine_cpu()
    time.sleep(seconds)
    after = machine_cpu()
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * len(os.sched_getaffinity(0)) if total else 0.0


def disturbance(label: str, load: Load | None) -> str | None:
    """A warning if other programs used over a tenth of the machine during `load`."""
    if load is None:
        return None
    other, wall = load.cpu.get("other_cpu_s"), load.cpu.get("wall_s")
    capacity = (wall or 0.0) * len(os.sched_getaffinity(0))
    if other is None or not capacity or other < 0.1 * capacity:
        return None
    return (
        f"{label}: other programs used {other:.1f} CPU s ({other / capacity:.0%} of the "
        "machine) during the load: its numbers are disturbed"
    )


# --- the server's processes ----------------------------------------------------------------------


class TreeWatcher:
    """Samples the process tree under `root` into a ledger, once a second, in a thread.

    Sessions come and go (a timed-out session is killed and replaced), so one look at the end
    would miss some; the ledger keeps every process seen, by pid and start time.
    """

    def __init__(self, root: int, ledger: ProcessLedger, exclude: set[int]) -> None:
        self.root, self.ledger, self.exclude = root, ledger, exclude
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-watcher", daemon=True)

    def sample(self) -> None:
        pids = [p for p in process_tree(self.root) if p not in self.exclude]
        self.most = max(self.most, len(pids))
        self.ledger.add(*pids)

    def _loop(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self.sample()

    def __enter__(self) -> TreeWatcher:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def check_gone(ledger: ProcessLedger) -> dict[str, Any]:
    """Wait for the ledger's processes to vanish; kill (by pid) and report any that remain."""
    left, waited = ledger.wait_gone(LEFTOVER_WAIT_S)
    leftovers = [
        {"pid": pid, "state": process_state(pid), "cmdline": _cmdline(pid)} for pid in left
    ]
    for pid in left:  # processes this run started (through the server): don't leave them
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return {"processes_seen": len(ledger.seen), "waited_s": waited, "leftovers": leftovers}


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (VmRSS), None if it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


# --- a minimal HTTP/1.1 client ---------------------------------------------------------------


class HttpError(Exception):
    """The reply could not be read as HTTP (closed early, malformed)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    token: str


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time, JSON in, bytes out.

    Just what the benchmark needs and nothing more, so that the client's CPU cost per request
    stays far below the server's (see the module docstring). A connection idle for longer than
    KEEPALIVE_S is replaced before use rather than raced against the server closing it; any
    error closes it, and the next request opens a new one.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self.connects = 0

    async def connect(self) -> None:
        if self._writer is not None and time.monotonic() - self._last_used > KEEPALIVE_S:
            self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.endpoint.host, self.endpoint.port
            )
            self._last_used = time.monotonic()
            self.connects += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, payload: Any = None, *, timeout_s: float
    ) -> tuple[int, bytes]:
        """(status, body); raises OSError, TimeoutError or HttpError when there is no reply."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.connect()
                status, body, keep = await self._exchange(method, path, payload)
        except BaseException:
            self.close()
            raise
        self._last_used = time.monotonic()
        if not keep:
            self.close()
        return status, body

    async def _exchange(self, method: str, path: str, payload: Any) -> tuple[int, bytes, bool]:
        assert self._reader is not None and self._writer is not None
        body = b"" if payload is None else json.dumps(payload).encode()
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.endpoint.host}:{self.endpoint.port}",
            f"Authorization: Bearer {self.endpoint.token}",
            f"Content-Length: {len(body)}",
        ]
        if payload is not None:
            head.append("Content-Type: application/json")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self._writer.drain()
        status, headers = await self._read_head(self._reader)
        data = await self._read_body(self._reader, status, headers)
        return status, data, headers.get("connection", "").lower() != "close"

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"bad status line {line[:80]!r}" if line else "connection closed")
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise HttpError("connection closed in the headers")
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    @staticmethod
    async def _read_body(
        reader: asyncio.StreamReader, status: int, headers: dict[str, str]
    ) -> bytes:
        if status in (204, 304) or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        return await reader.read()  # delimited by the end of the connection


def lost_note(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no reply in time (client timeout)"
    return f"{type(exc).__name__}: {exc}"


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """`python -m codeinterp.cli serve` in a fresh temporary directory (db, workspaces, log)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codeinterp-http-load-"))
        self.log_path = self.root / "server.log"
        self.endpoint = Endpoint(HOST, free_port(), os.urandom(18).hex())
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [
            sys.executable, "-m", "codeinterp.cli", "serve",
            "--host", HOST, "--port", str(self.endpoint.port), "--token", self.endpoint.token,
            "--db", str(self.root / "codeinterp.db"), "--data-dir", str(self.root / "workspaces"),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C does not reach it; stop() ends it
            )

    async def wait_ready(self) -> float:
        """Seconds until GET /api/info answers 200; raises if the server exits or never does."""
        start = time.perf_counter()
        while time.perf_counter() - start < START_TIMEOUT_S:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{self.log_tail()}")
            connection = Connection(self.endpoint)
            try:
                status, _ = await connection.request("GET", "/api/info", timeout_s=2.0)
                if status == 200:
                    return time.perf_counter() - start
            except (OSError, TimeoutError, HttpError):
                pass
            finally:
                connection.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not answer in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after STOP_GRACE_S: exit code, seconds to exit, whether killed.

        uvicorn re-raises the signal it caught once it has shut down, so a clean stop exits with
        -15 (killed by SIGTERM); the log's "Application shutdown complete" says it was clean.
        """
        if self.process is None or self.stop_info:
            return self.stop_info
        start = time.perf_counter()
        already = self.process.poll() is not None
        killed = False
        if not already:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed = True
        self.stop_info = {
            "exit_code": self.process.returncode,
            "stop_s": time.perf_counter() - start,
            "sigkill_needed": killed,
            "had_exited_before_stop": already,
        }
        return self.stop_info

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_summary(self) -> dict[str, Any]:
        """HTTP statuses from the access log, and the lines that report errors."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        statuses: Counter[str] = Counter()
        errors = []
        for line in text.splitlines():
            access = re.search(r'"([A-Z]+) \S+ HTTP/[\d.]+" (\d{3})', line)
            if access:
                statuses[f"{access.group(1)} {access.group(2)}"] += 1
            elif re.search(r"ERROR|Traceback|Exception|CRITICAL", line):
                errors.append(line[:300])
        return {
            "graceful_shutdown": "Application shutdown complete" in text,
            "bytes": len(text),
            "statuses": dict(sorted(statuses.items())),
            "error_lines": len(errors),
            "first_error_lines": errors[:LOG_LINES_KEPT],
        }

    def remove_files(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --- the HTTP phases -----------------------------------------------------------------------------


async def gather_timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[tuple[float, Any]]:
    """Run the calls at once; each one's seconds and result (or the exception it raised)."""

    async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
        start = time.perf_counter()
        try:
            result = await call()
        except Exception as exc:
            result = exc
        return time.perf_counter() - start, result

    return list(await asyncio.gather(*(timed(c) for c in calls)))


async def create_sessions(
    endpoint: Endpoint, n: int, timeout_s: float
) -> tuple[list[str], Metric, list[str]]:
    """n sessions created at once: their ids, the creation latencies, and the failures."""

    async def create() -> str:
        connection = Connection(endpoint)
        try:
            status, body = await connection.request(
                "POST", "/api/sessions", {}, timeout_s=timeout_s
            )
        finally:
            connection.close()
        if status != 201:
            raise HttpError(f"HTTP {status}: {body[:200]!r}")
        session_id: str = json.loads(body)["id"]
        return session_id

    timed = await gather_timed([create] * n)
    ids = [r for _, r in timed if isinstance(r, str)]
    failures = [lost_note(r) for _, r in timed if isinstance(r, BaseException)]
    metric = Metric("time", [s for s, r in timed if isinstance(r, str)])
    if failures:
        metric.detail["failures"] = failures
    return ids, metric, failures


async def http_load(
    endpoint: Endpoint, session_ids: list[str], cells: int, tag: str, settings: Settings, root: int
) -> Load:
    """Every session runs `cells` cells one after another; all sessions at once."""
    load = Load(tag, len(session_ids), cells)
    connections = [Connection(endpoint) for _ in session_ids]
    # Connected before the clock starts; one that fails here is retried (and lost) per cell.
    await asyncio.gather(*(c.connect() for c in connections), return_exceptions=True)

    async def one_session(index: int, session_id: str, connection: Connection) -> None:
        path = f"/api/sessions/{session_id}/execute"
        for cell in range(cells):
            payload = {"code": cell_code(tag, index, cell)}
            started = time.perf_counter()
            try:
                status, body = await connection.request(
                    "POST", path, payload, timeout_s=settings.request_timeout_s
                )
            except (OSError, TimeoutError, HttpError, asyncio.IncompleteReadError) as exc:
                latency = time.perf_counter() - started
                load.results.append(
                    CellResult(index, cell, started, latency, "lost", lost_note(exc))
                )
                continue
            latency = time.perf_counter() - started
            outcome, note = judge_reply(status, body, tag, index, cell)
            load.results.append(CellResult(index, cell, started, latency, outcome, note))

    before = CpuSnapshot.take(root)
    load.started = time.perf_counter()
    try:
        await asyncio.gather(
            *(
                one_session(i, s, c)
                for i, (s, c) in enumerate(zip(session_ids, connections, strict=True))
            )
        )
    finally:
        load.wall_s = time.perf_counter() - load.started
        load.cpu = CpuSnapshot.take(root).since(before)
        load.extra["connections_opened"] = sum(c.connects for c in connections)
        for connection in connections:
            connection.close()
    return load


def judge_reply(status: int, body: bytes, tag: str, session: int, cell: int) -> tuple[str, str]:
    """A reply's outcome: lost unless it is a 200 with an execution, else as `judge` says."""
    if status != 200:
        return "lost", f"HTTP {status}: {body[:200]!r}"
    text = body.decode(errors="replace")
    try:
        execution = Execution.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        return "lost", f"unreadable reply ({type(exc).__name__}: {exc}): {body[:200]!r}"
    return judge(execution, text, tag, session, cell)


@dataclass
class FaultCell:
    """One misbehaving cell: what it was, when it ran, and what its reply said."""

    name: str
    code: str
    started: float = 0.0
    ended: float = 0.0
    status: int | None = None
    timed_out: bool | None = None
    error: str | None = None
    lost: str | None = None
    output_chars: int = 0  # characters of output the reply kept
    truncated_chars: int = 0  # characters the output cap cut
    reply_bytes: int = 0
    note: str = ""
    recovered: bool | None = None  # the session answered 1+1 afterwards
    recovery_s: float | None = None

    @property
    def latency_s(self) -> float:
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"latency_s": self.latency_s}


async def run_fault_cell(
    endpoint: Endpoint, session_id: str, fault: FaultCell, settings: Settings
) -> None:
    """Run the faulty cell with a 10 s limit; then check that its session answers again."""
    connection = Connection(endpoint)
    path = f"/api/sessions/{session_id}/execute"
    try:
        fault.started = time.perf_counter()
        try:
            fault.status, body = await connection.request(
                "POST",
                path,
                {"code": fault.code, "timeout_s": FAULT_TIMEOUT_S},
                timeout_s=FAULT_TIMEOUT_S + settings.request_timeout_s,
            )
        except (OSError, TimeoutError, HttpError, asyncio.IncompleteReadError) as exc:
            fault.note = lost_note(exc)
            return
        finally:
            fault.ended = time.perf_counter()
        fault.reply_bytes = len(body)
        if fault.status != 200:
            fault.note = f"HTTP {fault.status}: {body[:200]!r}"
            return
        execution = Execution.from_dict(json.loads(body))
        fault.timed_out = execution.timed_out
        fault.error = None if execution.error is None else execution.error.ename
        fault.lost = execution.lost
        fault.output_chars = len(execution.stream_text())
        fault.truncated_chars = execution.truncated_chars
        start = time.perf_counter()
        status, body = await connection.request(
            "POST", path, {"code": RECOVERY_CELL}, timeout_s=settings.request_timeout_s
        )
        fault.recovery_s = time.perf_counter() - start
        result = Execution.from_dict(json.loads(body)).result if status == 200 else None
        fault.recovered = result is not None and result.text == "2"
    except (OSError, TimeoutError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
        fault.note = f"recovery check: {lost_note(exc)}"
        fault.recovered = False
    finally:
        connection.close()


async def wait_busy(endpoint: Endpoint, session_ids: list[str]) -> bool:
    """True once every session reports state `busy` (within BUSY_WAIT_S)."""
    connection = Connection(endpoint)
    deadline = time.perf_counter() + BUSY_WAIT_S
    pending = list(session_ids)
    try:
        while pending and time.perf_counter() < deadline:
            status, body = await connection.request(
                "GET", f"/api/sessions/{pending[0]}", timeout_s=5.0
            )
            if status == 200 and json.loads(body)["state"] == "busy":
                pending.pop(0)
            else:
                await asyncio.sleep(0.05)
    finally:
        connection.close()
    return not pending


@dataclass
class FaultPhase:
    clean: Load
    faulty: Load
    faults: list[FaultCell]
    faults_running_before_load: bool
    warmup: Load
    cells_in_window: int = 0  # normal cells sent while both faulty cells were running
    in_window: list[float] = field(default_factory=list)

    def ratio(self, stat: str) -> float | None:
        a, b = self.faulty.stat(stat), self.clean.stat(stat)
        return a / b if a is not None and b else None

    def problems(self) -> list[str]:
        found = self.warmup.problems("faults/warm-up") + self.clean.problems("faults/clean")
        found += self.faulty.problems("faults/with faults")
        if not self.faults_running_before_load:
            found.append("faults: the faulty cells were not both busy before the load started")
        for f in self.faults:
            if f.note:
                found.append(f"faults: {f.name}: {f.note}")
            if f.timed_out is not True:
                found.append(f"faults: {f.name}: timed_out is {f.timed_out}, expected true")
            if f.recovered is not True:
                found.append(f"faults: {f.name}: the session did not answer 1+1 afterwards")
        flood = self.faults[0]
        if (
            flood.truncated_chars <= 0
            or flood.output_chars > DEFAULT_MAX_OUTPUT_CHARS + OUTPUT_CAP_SLACK
        ):
            found.append(
                f"faults: flood output not capped: kept {flood.output_chars} chars, "
                f"truncated {flood.truncated_chars} (cap {DEFAULT_MAX_OUTPUT_CHARS})"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault_timeout_s": FAULT_TIMEOUT_S,
            "output_cap_chars": DEFAULT_MAX_OUTPUT_CHARS,
            "faults_running_before_load": self.faults_running_before_load,
            "warmup": self.warmup.to_dict(),
            "clean": self.clean.to_dict(),
            "with_faults": self.faulty.to_dict(),
            "ratio_with_faults_over_clean": {
                s: self.ratio(s) for s in ("median", "p90", "p99", "max")
            },
            "cells_sent_while_faults_ran": self.cells_in_window,
            "latency_while_faults_ran": summarize(self.in_window) if self.in_window else {},
            "faulty_cells": [f.to_dict() for f in self.faults],
        }


async def fault_phase(
    endpoint: Endpoint, session_ids: list[str], settings: Settings, root: int
) -> FaultPhase:
    """The small load clean, then again while a flood cell and a spin cell run beside it."""
    normal, (flood_id, spin_id) = session_ids[:-2], session_ids[-2:]
    # One untimed cell per session first: neither run below pays for a session's first cell.
    warmup = await http_load(endpoint, normal, 1, WARMUP_TAG, settings, root)
    log(f"faults: clean load, {len(normal)} sessions x {settings.fault_cells} cells")
    clean = await http_load(endpoint, normal, settings.fault_cells, CLEAN_TAG, settings, root)
    faults = [FaultCell("flood", FLOOD_CELL), FaultCell("spin", SPIN_CELL)]
    log(f"faults: starting the flood and spin cells ({FAULT_TIMEOUT_S:g} s limit)")
    tasks = [
        asyncio.create_task(run_fault_cell(endpoint, sid, fault, settings))
        for sid, fault in zip((flood_id, spin_id), faults, strict=True)
    ]
    running = await wait_busy(endpoint, [flood_id, spin_id])
    log("faults: the same load beside them")
    faulty = await http_load(endpoint, normal, settings.fault_cells, FAULT_TAG, settings, root)
    await asyncio.gather(*tasks)
    phase = FaultPhase(clean, faulty, faults, running, warmup)
    window_start = max(f.started for f in faults)
    window_end = min(f.ended for f in faults)
    phase.in_window = faulty.within(window_start, window_end)
    phase.cells_in_window = len(phase.in_window)
    return phase


async def delete_sessions(
    endpoint: Endpoint, session_ids: list[str], timeout_s: float
) -> dict[str, Any]:
    """Delete every session at once; then the service must list none."""

    async def delete(session_id: str) -> int:
        connection = Connection(endpoint)
        try:
            status, _ = await connection.request(
                "DELETE", f"/api/sessions/{session_id}", timeout_s=timeout_s
            )
            return status
        finally:
            connection.close()

    timed = await gather_timed([functools.partial(delete, s) for s in session_ids])
    statuses = Counter(str(r) if isinstance(r, int) else lost_note(r) for _, r in timed)
    connection = Connection(endpoint)
    remaining, list_error = None, None
    try:
        status, body = await connection.request("GET", "/api/sessions", timeout_s=timeout_s)
        if status == 200:
            remaining = len(json.loads(body))
        else:
            list_error = f"HTTP {status}: {body[:200]!r}"
    except (OSError, TimeoutError, HttpError, asyncio.IncompleteReadError) as exc:
        list_error = lost_note(exc)
    finally:
        connection.close()
    return {
        "deleted": len(session_ids),
        "statuses": dict(statuses),
        "latency": summarize([s for s, _ in timed]) if timed else {},
        "sessions_listed_after": remaining,
        **({"list_error": list_error} if list_error else {}),
    }


@dataclass
class HttpResults:
    run: BackendRun  # latency of the main load, session creation
    load: Load | None = None
    faults: FaultPhase | None = None
    startup_s: float | None = None
    deletion: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, Any] = field(default_factory=dict)
    server_log: dict[str, Any] = field(default_factory=dict)
    server_rss: dict[str, int | None] = field(default_factory=dict)  # bytes, after each phase
    error: str | None = None


async def http_phases(server: Server, settings: Settings, results: HttpResults) -> None:
    """Load, then faults, then deleting every session; results are filled in as they come."""
    endpoint = server.endpoint
    results.startup_s = await server.wait_ready()
    results.server_rss["ready"] = rss_bytes(server.pid)
    log(f"http: server ready in {results.startup_s:.1f} s; creating {settings.sessions} sessions")
    ids, creates, failures = await create_sessions(
        endpoint, settings.sessions, settings.request_timeout_s
    )
    results.run.metrics["session_open"] = creates
    created = list(ids)
    try:
        if failures:
            raise RuntimeError(f"{len(failures)} session(s) could not be created: {failures[0]}")
        await asyncio.sleep(SETTLE_S)  # let the warm pool refill before the cells
        log(f"http: {settings.sessions} sessions x {settings.cells} cells, all at once")
        results.load = await http_load(
            endpoint, ids, settings.cells, LOAD_TAG, settings, server.pid
        )
        results.run.metrics["cell"] = Metric("time", results.load.latencies)
        results.server_rss["after_load"] = rss_bytes(server.pid)
        log(f"http: {fmt_load(results.load)}")
        fault_ids, _, failures = await create_sessions(
            endpoint, settings.fault_sessions + 2, settings.request_timeout_s
        )
        created += fault_ids
        if failures:
            raise RuntimeError(f"{len(failures)} fault-phase session(s) not created: {failures[0]}")
        await asyncio.sleep(SETTLE_S)
        results.faults = await fault_phase(endpoint, fault_ids, settings, server.pid)
        results.server_rss["after_faults"] = rss_bytes(server.pid)
    finally:
        log(f"http: deleting {len(created)} sessions")
        results.deletion = await delete_sessions(endpoint, created, settings.request_timeout_s)
        results.server_rss["after_delete"] = rss_bytes(server.pid)


def run_http(settings: Settings) -> HttpResults:
    """The whole HTTP part against a fresh server, which is stopped and checked whatever happens."""
    results = HttpResults(BackendRun("http"))
    server = Server()
    ledger = ProcessLedger()
    try:
        server.start()
        with TreeWatcher(server.pid, ledger, exclude=set()) as watcher:
            try:
                asyncio.run(http_phases(server, settings, results))
            except Exception as exc:
                results.error = f"{type(exc).__name__}: {exc}"
                log(f"http: ERROR: {results.error}")
        results.processes["most_at_once"] = watcher.most
        log("http: stopping the server (SIGTERM)")
        results.stop = server.stop()
        results.processes |= check_gone(ledger)
        results.server_log = server.log_summary()
    finally:
        server.stop()
        server.remove_files()
    return results


def fmt_load(load: Load) -> str:
    p50, p99 = load.stat("median"), load.stat("p99")
    latency = f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms" if p50 and p99 else "no replies"
    return f"{len(load.results)} cells in {load.wall_s:.1f} s, {latency}, {load.counts()}"


# --- the direct baseline -------------------------------------------------------------------------


def direct_load(sessions: list[Session], cells: int, tag: str) -> Load:
    """The same workload on executor sessions in this process: one thread per session."""
    load = Load(tag, len(sessions), cells)
    per_thread: list[list[CellResult]] = [[] for _ in sessions]
    barrier = threading.Barrier(len(sessions) + 1)

    def one_session(index: int) -> None:
        session, results = sessions[index], per_thread[index]
        barrier.wait()
        for cell in range(cells):
            started = time.perf_counter()
            try:
                execution = session.execute(cell_code(tag, index, cell))
            except Exception as exc:
                latency = time.perf_counter() - started
                results.append(CellResult(index, cell, started, latency, "lost", lost_note(exc)))
                continue
            latency = time.perf_counter() - started
            text = json.dumps(execution.to_dict())
            outcome, note = judge(execution, text, tag, index, cell)
            results.append(CellResult(index, cell, started, latency, outcome, note))

    threads = [
        threading.Thread(target=one_session, args=(i,), name=f"direct-{i}", daemon=True)
        for i in range(len(sessions))
    ]
    for thread in threads:
        thread.start()
    before = CpuSnapshot.take(os.getpid())
    barrier.wait()
    load.started = time.perf_counter()
    for thread in threads:
        thread.join()
    load.wall_s = time.perf_counter() - load.started
    load.cpu = CpuSnapshot.take(os.getpid()).since(before)
    load.results = [r for results in per_thread for r in results]
    return load


@dataclass
class DirectResults:
    run: BackendRun
    load: Load | None = None
    processes: dict[str, Any] = field(default_factory=dict)


def run_direct(settings: Settings) -> DirectResults:
    """N sandbox sessions opened at once (one thread each), then the N x M load, then closed."""
    results = DirectResults(BackendRun("direct"))
    ledger = ProcessLedger()
    try:
        executor = get_executor(EXECUTOR)
    except Exception as exc:
        results.run.unavailable = f"{type(exc).__name__}: {exc}"
        return results
    sessions: list[Session] = []
    with TreeWatcher(os.getpid(), ledger, exclude={os.getpid()}):
        try:
            log(f"direct: opening {settings.sessions} sessions at once")
            opens = Metric("time")
            results.run.metrics["session_open"] = opens
            lock = threading.Lock()

            def open_one() -> None:
                start = time.perf_counter()
                session = executor.open()
                with lock:
                    opens.samples.append(time.perf_counter() - start)
                    sessions.append(session)

            threads = [
                threading.Thread(target=open_one, daemon=True) for _ in range(settings.sessions)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len(sessions) < settings.sessions:
                raise RuntimeError(f"only {len(sessions)} of {settings.sessions} sessions opened")
            time.sleep(SETTLE_S)
            log(f"direct: {settings.sessions} sessions x {settings.cells} cells, all at once")
            results.load = direct_load(sessions, settings.cells, LOAD_TAG)
            results.run.metrics["cell"] = Metric("time", results.load.latencies)
            log(f"direct: {fmt_load(results.load)}")
        except Exception as exc:
            results.run.metrics.setdefault(
                "cell", Metric("time")
            ).error = f"{type(exc).__name__}: {exc}"
            log(f"direct: ERROR: {exc}")
        finally:
            for session in sessions:
                session.close()
            executor.close()
    results.processes = check_gone(ledger)
    return results


# --- the report ---------------------------------------------------------------------------------

LATENCY_ROWS = [
    Row("cell", "median", "cell latency, p50"),
    Row("cell", "p90", "cell latency, p90"),
    Row("cell", "p99", "cell latency, p99"),
    Row("cell", "max", "cell latency, max"),
    Row("session_open", "median", "session create (all at once), p50"),
    Row("session_open", "p99", "session create (all at once), p99"),
    Row("session_open", "max", "session create (all at once), max"),
]


def _value(value: float | None, scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else _number(value * scale) + suffix


def _ratio_text(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def load_totals(loads: list[Load | None]) -> list[list[str]]:
    """Rows for the totals grid: one column per load."""

    def row(label: str, value: Callable[[Load], str]) -> list[str]:
        return [label, *(value(x) if x is not None else "n/a" for x in loads)]

    def cpu(key: str) -> Callable[[Load], str]:
        return lambda x: _value(x.cpu.get(key))

    def counts(x: Load) -> str:
        return " / ".join(str(v) for v in x.counts().values())

    return [
        row("cells", lambda x: f"{len(x.results):,}"),
        row("wall time (s)", lambda x: _number(x.wall_s)),
        row("throughput (cells/s)", lambda x: _number(x.throughput)),
        row("ok / lost / mixed / wrong", counts),
        row("CPU s: this process (client)", cpu("client_cpu_s")),
        row("CPU s: server process", cpu("server_cpu_s")),
        row("CPU s: session processes", cpu("sessions_cpu_s")),
        row("CPU s: anything else on the machine", cpu("other_cpu_s")),
        row("machine busy (cores)", cpu("machine_busy_cores")),
    ]


def render_report(http: HttpResults, direct: DirectResults, settings: Settings) -> str:
    parts = [
        f"== load: {settings.sessions} sessions x {settings.cells} cells, all sessions at once "
        f"(http: codeinterp serve, {EXECUTOR}; direct: the executor in-process, one thread "
        "per session)",
        render_table([http.run, direct.run], LATENCY_ROWS),
    ]
    a, b = http.load, direct.load
    ratio_lines = [
        [label, _ratio_text(a.stat(s) if a else None, b.stat(s) if b else None)]
        for label, s in (("p50", "median"), ("p90", "p90"), ("p99", "p99"), ("max", "max"))
    ]
    if a is not None and b is not None:
        ratio_lines.append(["throughput (direct / http)", _ratio_text(b.throughput, a.throughput)])
    parts.append(_grid(["http / direct", "ratio"], ratio_lines))
    parts.append(_grid(["totals", "http", "direct"], load_totals([a, b])))
    if http.faults is not None:
        parts.append(render_faults(http.faults, settings))
    parts.append(render_cleanup(http, direct))
    return "\n\n".join(parts)


def render_faults(phase: FaultPhase, settings: Settings) -> str:
    clean, faulty = phase.clean, phase.faulty
    lines = [
        [label, _value(clean.stat(s), 1000), _value(faulty.stat(s), 1000),
         _ratio_text(faulty.stat(s), clean.stat(s))]
        for label, s in (("p50", "median"), ("p90", "p90"), ("p99", "p99"), ("max", "max"))
    ]  # fmt: skip
    window = summarize(phase.in_window) if phase.in_window else {}
    lines += [
        ["wall time (s)", _number(clean.wall_s), _number(faulty.wall_s), ""],
        ["throughput (cells/s)", _number(clean.throughput), _number(faulty.throughput),
         _ratio_text(faulty.throughput, clean.throughput)],
        ["ok / lost / mixed / wrong", *(" / ".join(map(str, x.counts().values()))
                                        for x in (clean, faulty)), ""],
        ["server CPU s", _value(clean.cpu.get("server_cpu_s")),
         _value(faulty.cpu.get("server_cpu_s")), ""],
        ["cells sent while both faults ran", "", str(phase.cells_in_window), ""],
        ["  their p99 (ms)", "", _value(window.get("p99"), 1000), ""],
    ]  # fmt: skip
    head = (
        f"== faults: {settings.fault_sessions} sessions x {settings.fault_cells} cells, clean, "
        f"then beside a flood cell and a never-ending cell ({FAULT_TIMEOUT_S:g} s limit each)"
    )
    table = _grid(["normal cells (ms)", "clean", "with faults", "faults / clean"], lines)
    fault_lines = [
        [f.name, str(f.status), str(f.timed_out), f.error or "-", _number(f.latency_s),
         f"{f.output_chars:,}", f"{f.truncated_chars:,}", f"{f.reply_bytes:,}",
         str(f.recovered)]
        for f in phase.faults
    ]  # fmt: skip
    faults = _grid(
        ["faulty cell", "HTTP", "timed_out", "error", "latency s", "output kept (chars)",
         "truncated (chars)", "reply bytes", "1+1 after"],
        fault_lines,
    )  # fmt: skip
    return "\n\n".join([head, table, faults])


def render_cleanup(http: HttpResults, direct: DirectResults) -> str:
    d, stop, procs = http.deletion, http.stop, http.processes
    lines = [
        ["sessions deleted (HTTP statuses)", f"{d.get('deleted')} ({d.get('statuses')})"],
        ["sessions listed afterwards", str(d.get("sessions_listed_after"))],
        ["server exit code (uvicorn re-raises SIGTERM: -15)", str(stop.get("exit_code"))],
        ["server stop time (s)", _value(stop.get("stop_s"))],
        ["SIGKILL needed", str(stop.get("sigkill_needed"))],
        ["graceful shutdown (logged)", str(http.server_log.get("graceful_shutdown"))],
        ["server processes seen / most at once",
         f"{procs.get('processes_seen')} / {procs.get('most_at_once')}"],
        ["server processes left after stop", str(len(procs.get("leftovers", [])))],
        ["direct: processes left after close", str(len(direct.processes.get("leftovers", [])))],
        ["server log: HTTP statuses", str(http.server_log.get("statuses"))],
        ["server log: error lines", str(http.server_log.get("error_lines"))],
        ["server RSS MiB: " + ", ".join(http.server_rss),
         ", ".join("n/a" if v is None else _number(v / MIB) for v in http.server_rss.values())],
    ]  # fmt: skip
    return "== clean-up\n" + _grid(["check", "result"], lines)


def problems(http: HttpResults, direct: DirectResults) -> list[str]:
    """Everything that must not happen; the run fails (exit 1) if any did."""
    found = []
    if http.error:
        found.append(f"http: {http.error}")
    if http.load is not None:
        found += http.load.problems("http load")
    elif not http.error:
        found.append("http: the load did not run")
    if http.faults is not None:
        found += http.faults.problems()
    deletion = http.deletion
    bad = {k: v for k, v in deletion.get("statuses", {}).items() if k != "204"}
    if bad:
        found.append(f"clean-up: DELETE replies other than 204: {bad}")
    if deletion.get("sessions_listed_after") not in (0, None):
        found.append(f"clean-up: {deletion['sessions_listed_after']} sessions still listed")
    if deletion.get("list_error"):
        found.append(f"clean-up: GET /api/sessions failed: {deletion['list_error']}")
    if http.stop.get("sigkill_needed") or http.stop.get("had_exited_before_stop"):
        found.append(f"clean-up: the server did not stop on SIGTERM as expected: {http.stop}")
    if http.server_log and not http.server_log.get("graceful_shutdown"):
        found.append("clean-up: the server log does not say 'Application shutdown complete'")
    for leftover in http.processes.get("leftovers", []):
        found.append(f"clean-up: server process left: {leftover}")
    if http.server_log.get("error_lines"):
        found.append(f"server log: {http.server_log['error_lines']} error lines")
    if direct.run.unavailable:
        found.append(f"direct: unavailable: {direct.run.unavailable}")
    if direct.load is not None:
        found += direct.load.problems("direct load")
    for key, metric in direct.run.metrics.items():
        if metric.error:
            found.append(f"direct {key}: {metric.error}")
    for leftover in direct.processes.get("leftovers", []):
        found.append(f"direct: session process left: {leftover}")
    return found


def json_extra(http: HttpResults, direct: DirectResults) -> dict[str, Any]:
    a, b = http.load, direct.load

    def ratio(stat: str) -> float | None:
        x, y = (a.stat(stat) if a else None), (b.stat(stat) if b else None)
        return x / y if x is not None and y else None

    return {
        "http": {
            "error": http.error,
            "server_startup_s": http.startup_s,
            "load": a.to_dict() if a else None,
            "faults": http.faults.to_dict() if http.faults else None,
            "deletion": http.deletion,
            "stop": http.stop,
            "processes": http.processes,
            "server_log": http.server_log,
            "server_rss_bytes": http.server_rss,
        },
        "direct": {"load": b.to_dict() if b else None, "processes": direct.processes},
        "ratio_http_over_direct": {s: ratio(s) for s in ("median", "p90", "p99", "max")},
    }


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_load",
        description="Load, fault and clean-up benchmark of a real `codeinterp serve`.",
    )
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 100, quick 10)")
    parser.add_argument("--cells", type=int, help="cells per session (default 100, quick 10)")
    parser.add_argument(
        "--fault-sessions", type=int, help="normal sessions of the fault phase (default 20)"
    )
    parser.add_argument(
        "--fault-cells", type=int, help="cells per session in the fault phase (default 50)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=120.0, help="seconds before a reply is lost"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--quick", action="store_true", help="10 sessions x 10 cells")
    args = parser.parse_args(argv)
    sessions = max(1, args.sessions or (10 if args.quick else 100))
    cells = max(1, args.cells or (10 if args.quick else 100))
    return Settings(
        sessions=sessions,
        cells=cells,
        fault_sessions=max(1, args.fault_sessions or min(20, sessions)),
        fault_cells=max(1, args.fault_cells or min(50, cells)),
        request_timeout_s=args.request_timeout,
        json_path=args.json,
        quick=args.quick,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the HTTP part, then the direct baseline; print the tables, write the JSON.

    Returns 0 if nothing that must not happen did (no lost, mixed or wrong reply, faulty cells
    timed out and capped, every session deleted, the server stopped on SIGTERM leaving no
    process, no error in its log), else 1 with the problems listed.
    """
    settings = parse_args(argv)
    machine = machine_info()
    machine["busy_cores_before_run"] = background_load()
    if machine["busy_cores_before_run"] > 0.2:
        log(
            f"WARNING: the machine is not idle: {machine['busy_cores_before_run']:.2f} cores busy "
            "before the run; the numbers will be disturbed"
        )
    http = run_http(settings)
    direct = run_direct(settings)
    print(render_report(http, direct, settings))
    found = problems(http, direct)
    if found:
        print("\nPROBLEMS:\n" + "\n".join(f"  - {p}" for p in found))
    warnings = [
        w
        for w in (
            disturbance("http load", http.load),
            disturbance("direct load", direct.load),
            disturbance("faults, clean", http.faults.clean if http.faults else None),
            disturbance("faults, with faults", http.faults.faulty if http.faults else None),
        )
        if w is not None
    ]
    if warnings:
        print("\nWARNINGS:\n" + "\n".join(f"  - {w}" for w in warnings))
    print(
        f"\nmachine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, {machine['date']}; "
        f"{machine['busy_cores_before_run']:.2f} cores busy before the run"
    )
    settings_doc = asdict(settings) | {
        "json_path": str(settings.json_path),
        "executor": EXECUTOR,
        "cell_code_example": cell_code(LOAD_TAG, 17, 42),
        "flood_cell": FLOOD_CELL,
        "spin_cell": SPIN_CELL,
        "fault_timeout_s": FAULT_TIMEOUT_S,
        "client": "asyncio streams, minimal HTTP/1.1, one keep-alive connection per session",
    }
    extra = json_extra(http, direct) | {"problems": found, "warnings": warnings}
    write_json(
        settings.json_path, [http.run, direct.run], settings_doc, machine,
        benchmark="http_load", extra=extra,
    )  # fmt: skip
    print(f"raw numbers: {settings.json_path}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
