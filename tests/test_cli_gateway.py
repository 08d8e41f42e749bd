"""Every command that opens sessions can put them on a Jupyter Kernel Gateway (--gateway-url),
against a real `kernel_gateway` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KernelGateway
from tests.server.test_real_server import Server

SCRIPT = Path(sys.executable).parent / "codeinterp"


def codeinterp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        input="/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def scripted(tmp_path: Path, *replies: str) -> str:
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(list(replies)))
    return f"scripted:{path}"


def test_run_drives_the_loop_on_a_gateway_kernel(
    tmp_path: Path, kernel_gateway: KernelGateway
) -> None:
    code = "```python\nimport os\nprint(6 * 7, os.getpid() != 1)\n```"
    done = codeinterp(
        "run", "six times seven?", "--json", "--model", scripted(tmp_path, code, "It is 42."),
        "--executor", "gateway", "--gateway-url", kernel_gateway.url,
        env={"CODEINTERP_GATEWAY_TOKEN": kernel_gateway.token},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    execution = next(e for e in events if e["type"] == "execution")["execution"]
    assert execution["outputs"] == [{"type": "stream", "name": "stdout", "text": "42 True\n"}]
    assert events[-1]["answer"] == "It is 42."


def test_serve_opens_its_sessions_on_the_gateway(
    tmp_path: Path, kernel_gateway: KernelGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEINTERP_GATEWAY_TOKEN", kernel_gateway.token)
    server = Server(tmp_path, [], "--executor", "gateway", "--gateway-url", kernel_gateway.url)
    try:
        session = server.client.post("/api/sessions", json={}).json()
        assert session["executor"] == "gateway"
        url = f"/api/sessions/{session['id']}/execute"
        server.client.post(url, json={"code": "x = 6 * 7"}).raise_for_status()
        result = server.client.post(url, json={"code": "x"}).json()
        assert result["outputs"][0]["data"]["text/plain"] == "42"
        # Its files live on the gateway's host: the file routes say so instead of guessing.
        files = server.client.get(f"/api/sessions/{session['id']}/files")
        assert files.status_code == 409
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["exec", "run", "chat", "eval", "serve", "mcp"])
def test_every_session_command_checks_its_gateway_options(tmp_path: Path, command: str) -> None:
    model = ["--model", scripted(tmp_path, "Hi.")] if command in ("run", "chat", "eval") else []
    task = ["a task"] if command == "run" else []
    missing = codeinterp(command, *task, *model, "--executor", "gateway")
    assert missing.returncode == 2, missing.stderr
    assert "--executor gateway needs --gateway-url" in missing.stderr
    stray = codeinterp(command, *task, *model, "--gateway-url", "http://127.0.0.1:9")
    assert stray.returncode == 2, stray.stderr
    assert "--gateway-url is only for --executor gateway" in stray.stderr
