"""Shared test helpers."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def process_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting to be reaped counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants, from the host's /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class KernelGateway:
    url: str
    token: str
    log: Path


@pytest.fixture(scope="session")
def kernel_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelGateway]:
    """A real `jupyter kernelgateway` on loopback, shared by the test session.

    Its iopub rate limit is off: codeinterp caps output itself, and the gateway would drop it.
    """
    pytest.importorskip("kernel_gateway", reason="jupyter-kernel-gateway is not installed")
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    root = tmp_path_factory.mktemp("kernel-gateway")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["KG_AUTH_TOKEN"] = token
    env["MPLBACKEND"] = "agg"  # as a gateway may have: sessions must still get their plots
    cmd = [
        sys.executable,
        "-m",
        "kernel_gateway",
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0",
        "--ZMQChannelsWebsocketConnection.limit_rate=False",
    ]
    log = root / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = KernelGateway(f"http://127.0.0.1:{port}", token, log)
    request = urllib.request.Request(
        f"{gateway.url}/api/kernelspecs", headers={"Authorization": f"token {token}"}
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the kernel gateway did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    try:
        yield gateway
    finally:
        proc.terminate()  # the gateway shuts its kernels down as it exits
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
