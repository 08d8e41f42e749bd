"""`codeinterp serve` for real: a uvicorn process on loopback, killed and started again.

The in-process tests cover the API; these cover what only a real server and a real crash show:
the printed URL, client disconnects that interrupt work, and persistence after SIGKILL (the
store keeps every completed event, the workspace keeps its files, the next turn runs in a new
session on the same workspace after a `session_lost` event).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeinterp.executors import get_executor
from tests.conftest import pid_exists, process_tree

TOKEN = "real-server-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

WRITE = (
    "Saving a note.\n```python\nx = 1\nopen('notes.txt', 'w').write('kept')\n"
    "print('saved', flush=True)\n```"
)
SLOW = "Working.\n```python\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)\n```"
CHECK = "```python\nprint(open('notes.txt').read())\nprint('x' in globals())\n```"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One `codeinterp serve` process on a free loopback port."""

    def __init__(self, tmp_path: Path, replies: list[str], *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        model = tmp_path / f"replies-{self.port}.json"
        model.write_text(json.dumps(replies))
        self.log = tmp_path / f"server-{self.port}.log"
        command = [
            sys.executable, "-m", "codeinterp.cli", "serve",
            "--port", str(self.port), "--token", TOKEN, "--model", f"scripted:{model}",
            "--db", str(tmp_path / "codeinterp.db"), "--data-dir", str(tmp_path / "workspaces"),
            *extra,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.base, headers=AUTH, timeout=30)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()}")
            try:
                if self.client.get("/api/info").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def events_until(lines: Iterator[str], stop: Any) -> list[tuple[str, Any]]:
    """Read SSE lines until an event for which `stop(name, data)` is true; returns them all."""
    events: list[tuple[str, Any]] = []
    name = "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
            if stop(name, events[-1][1]):
                return events
    raise AssertionError(f"the stream ended first: {events}")


def test_the_url_with_the_token_is_printed_and_a_remote_host_is_refused(
    tmp_path: Path, started: list[Server]
) -> None:
    server = Server(tmp_path, [])
    started.append(server)
    assert f"http://127.0.0.1:{server.port}/#token={TOKEN}" in server.log.read_text()
    page = httpx.get(server.base + "/")
    assert page.status_code == 200
    refused = subprocess.run(
        [sys.executable, "-m", "codeinterp.cli", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--allow-remote" in refused.stderr


def test_an_unused_session_expires_after_the_session_idle_timeout_option(
    tmp_path: Path, started: list[Server]
) -> None:
    server = Server(tmp_path, [], "--session-idle-timeout", "1")
    started.append(server)
    sid = server.client.post("/api/sessions", json={}).json()["id"]
    deadline = time.monotonic() + 30
    while (reply := server.client.get(f"/api/sessions/{sid}")).status_code != 404:
        assert time.monotonic() < deadline, "the unused session never expired"
        time.sleep(0.05)
    assert "--session-idle-timeout" in reply.json()["detail"]
    refused = subprocess.run(
        [sys.executable, "-m", "codeinterp.cli", "serve", "--session-idle-timeout", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "0 or more" in refused.stderr


def test_closing_an_execute_stream_interrupts_the_cell(
    tmp_path: Path, started: list[Server]
) -> None:
    server = Server(tmp_path, [])
    started.append(server)
    sid = server.client.post("/api/sessions", json={}).json()["id"]
    code = "import time\nprint('go', flush=True)\ntime.sleep(30)"
    with server.client.stream(
        "POST", f"/api/sessions/{sid}/execute?stream=true", json={"code": code}
    ) as reply:
        events_until(reply.iter_lines(), lambda name, data: name == "output")
    started_at = time.monotonic()
    while server.client.get(f"/api/sessions/{sid}").json()["state"] != "idle":
        assert time.monotonic() - started_at < 10, "the cell went on after the client left"
        time.sleep(0.05)
    after = server.client.post(f"/api/sessions/{sid}/execute", json={"code": "'still alive'"})
    assert after.json()["outputs"][0]["data"]["text/plain"] == "'still alive'"


def test_closing_a_turn_stream_interrupts_the_turn(tmp_path: Path, started: list[Server]) -> None:
    server = Server(tmp_path, [SLOW, "never read"])
    started.append(server)
    cid = server.client.post("/api/conversations", json={}).json()["id"]
    with server.client.stream(
        "POST", f"/api/conversations/{cid}/messages", json={"text": "work"}
    ) as reply:
        events_until(reply.iter_lines(), lambda name, data: name == "output")
    started_at = time.monotonic()
    while server.client.get(f"/api/conversations/{cid}").json()["running"]:
        assert time.monotonic() - started_at < 10, "the turn went on after the client left"
        time.sleep(0.05)
    stored = server.client.get(f"/api/conversations/{cid}").json()["events"]
    assert stored[-1]["type"] == "finished" and stored[-1]["stop_reason"] == "interrupted"


@pytest.mark.slow
def test_a_conversation_survives_sigkill_of_the_server(
    tmp_path: Path, started: list[Server]
) -> None:
    first = Server(tmp_path, [WRITE, "Saved.", SLOW, "never read"])
    started.append(first)
    conversation = first.client.post("/api/conversations", json={"title": "crash"}).json()
    cid = conversation["id"]
    with first.client.stream(
        "POST", f"/api/conversations/{cid}/messages", json={"text": "save a note"}
    ) as reply:
        turn1 = events_until(reply.iter_lines(), lambda name, data: name == "done")
    assert dict(turn1)["finished"]["stop_reason"] == "answered"

    processes = process_tree(first.process.pid)
    with first.client.stream(
        "POST", f"/api/conversations/{cid}/messages", json={"text": "now sleep"}
    ) as reply:
        lines = reply.iter_lines()  # kept open: dropping it would close the connection, and
        turn2 = events_until(  # a client that leaves interrupts the turn
            lines, lambda name, data: name == "output" and data["output"]["text"] == "sleeping\n"
        )
        processes |= process_tree(first.process.pid)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    first.client.close()
    deadline = time.monotonic() + 10
    while any(pid_exists(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in processes if pid_exists(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "processes of the killed server were left running"

    second = Server(tmp_path, [CHECK, "The note is there; x is gone."])
    started.append(second)
    stored = second.client.get(f"/api/conversations/{cid}").json()
    assert stored["title"] == "crash" and stored["running"] is False
    events = stored["events"]
    streamed1 = [data for name, data in turn1 if name != "done"]
    assert [e for e in events if e["turn"] == 1] == streamed1
    stored2 = [e for e in events if e["turn"] == 2]
    streamed2 = [data for _, data in turn2]
    assert stored2[: len(streamed2)] == streamed2  # up to the last completed event, and on
    assert "execution" not in [e["type"] for e in stored2]  # the cell never finished
    files = second.client.get(f"/api/sessions/{conversation['session_id']}/files").json()
    assert [f["path"] for f in files] == ["notes.txt"]

    with second.client.stream(
        "POST", f"/api/conversations/{cid}/messages", json={"text": "check"}
    ) as reply:
        turn3 = events_until(reply.iter_lines(), lambda name, data: name == "done")
    assert turn3[0][0] == "session_lost"
    assert "A turn was running when the service stopped" in turn3[0][1]["detail"]
    assert dict(turn3)["execution"]["execution"]["outputs"][0]["text"] == "kept\nFalse\n"
    assert dict(turn3)["finished"]["stop_reason"] == "answered"
    assert dict(turn3)["user"]["turn"] == 3
    final = second.client.get(f"/api/conversations/{cid}").json()["events"]
    assert [e["type"] for e in final].count("session_lost") == 1


def test_latency_of_a_trivial_execute_over_http(
    tmp_path: Path, started: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a benchmark: a bound that catches a blocked loop or a per-request session start."""
    server = Server(tmp_path, [])
    started.append(server)
    sid = server.client.post("/api/sessions", json={}).json()["id"]
    over_http = []
    for _ in range(200):
        t = time.perf_counter()
        server.client.post(f"/api/sessions/{sid}/execute", json={"code": "1 + 1"})
        over_http.append(time.perf_counter() - t)
    direct = []
    with get_executor("sandbox") as executor, executor.open() as session:
        for _ in range(200):
            t = time.perf_counter()
            session.execute("1 + 1")
            direct.append(time.perf_counter() - t)
    http_ms, direct_ms = statistics.median(over_http) * 1e3, statistics.median(direct) * 1e3
    with capsys.disabled():
        print(f"\ntrivial execute, median: over HTTP {http_ms:.2f} ms, direct {direct_ms:.2f} ms")
    assert http_ms < 50
