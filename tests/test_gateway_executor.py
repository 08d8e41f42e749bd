"""The `gateway` backend against a real `jupyter kernelgateway` on loopback (tests/conftest.py).

The shared contract is in tests/conformance/; here is what is particular to a gateway: its
errors, what it does when a kernel dies or is deleted behind our back, the gateway-side
workspace, and the command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.errors import ConfigError, SessionClosed
from codeinterp.executors import get_executor
from codeinterp.executors.base import SessionState
from codeinterp.executors.gateway import GatewayExecutor, GatewaySession
from tests.conftest import KernelGateway

pytest.importorskip("websocket", reason="websocket-client is not installed")


@pytest.fixture(scope="module")
def executor(kernel_gateway: KernelGateway) -> Iterator[GatewayExecutor]:
    ex = GatewayExecutor(
        kernel_gateway.url, token=kernel_gateway.token, timeout_s=30, interrupt_grace_s=1
    )
    with ex:
        yield ex


@pytest.fixture
def session(executor: GatewayExecutor) -> Iterator[GatewaySession]:
    with executor.open() as s:
        yield s


def kernel_exists(gateway: KernelGateway, kernel_id: str) -> bool:
    request = urllib.request.Request(
        f"{gateway.url}/api/kernels/{kernel_id}",
        headers={"Authorization": f"token {gateway.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False


def delete_kernel(gateway: KernelGateway, kernel_id: str) -> None:
    request = urllib.request.Request(
        f"{gateway.url}/api/kernels/{kernel_id}",
        method="DELETE",
        headers={"Authorization": f"token {gateway.token}"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def test_registered_and_honest_about_what_it_cannot_do(kernel_gateway: KernelGateway) -> None:
    with get_executor("gateway", url=kernel_gateway.url, token=kernel_gateway.token) as ex:
        assert ex.name == "gateway"
        caps = ex.capabilities
        assert caps.stateful and caps.can_kill and caps.separate_process
        assert not caps.local_workspace and not caps.reports_exit_cause and not caps.isolated


def test_wrong_token_names_the_fix(kernel_gateway: KernelGateway) -> None:
    with pytest.raises(ConfigError, match=r"HTTP 401.*KG_AUTH_TOKEN"):
        GatewayExecutor(kernel_gateway.url, token="wrong")
    with pytest.raises(ConfigError, match="HTTP 401"):
        GatewayExecutor(kernel_gateway.url)


def test_unreachable_gateway_and_bad_url_name_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(ConfigError, match=r"Cannot reach the gateway.*--gateway-url"):
        GatewayExecutor(f"http://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="http"):
        GatewayExecutor(f"127.0.0.1:{port}")


def test_unknown_kernel_lists_the_gateways_kernels(kernel_gateway: KernelGateway) -> None:
    with pytest.raises(ConfigError, match=r"no kernel named 'nope' \(it has: .*python3"):
        GatewayExecutor(kernel_gateway.url, token=kernel_gateway.token, kernel_name="nope")


def test_workspace_is_a_directory_on_the_gateway_side_removed_on_close(
    executor: GatewayExecutor, kernel_gateway: KernelGateway
) -> None:
    session = executor.open()
    other = executor.open()
    kernel_id = session.kernel_id
    assert kernel_id is not None
    assert session.workspace != other.workspace  # one directory per session
    result = session.execute("import os\nprint(os.getcwd())")
    assert result.stdout == f"{session.workspace}\n"
    # The gateway is on this machine here, so its side can be looked at directly.
    assert session.workspace.is_dir()
    session.close()
    other.close()
    assert not session.workspace.exists()
    assert not kernel_exists(kernel_gateway, kernel_id)


def test_given_workspace_path_is_used_on_the_gateway_and_kept(
    executor: GatewayExecutor, tmp_path: Path
) -> None:
    target = tmp_path / "made" / "by-kernel"
    with executor.open(workspace=target) as s:
        assert s.workspace == target
        s.execute("open('out.txt', 'w').write('kept')")
        s.restart()
        assert s.execute("print(open('out.txt').read())").stdout == "kept\n"
    assert (target / "out.txt").read_text() == "kept"


def test_segfault_is_reported_and_the_next_cell_runs(session: GatewaySession) -> None:
    workspace = session.workspace
    session.execute("x = 1")
    started = time.monotonic()
    result = session.execute("import ctypes\nctypes.string_at(0)")
    assert time.monotonic() - started < 6  # the gateway's restarter polls every 3 s
    assert result.lost is not None and "died" in result.lost and "gateway" in result.lost
    assert session.state is SessionState.DEAD
    after = session.execute("import os\nprint(os.getcwd())\nprint('x' in dir())")
    assert after.stdout == f"{workspace}\nFalse\n"
    assert session.state is SessionState.IDLE


def test_death_while_idle_is_reported_by_the_next_cell_which_does_not_run(
    session: GatewaySession,
) -> None:
    session.execute("import os, threading\nthreading.Timer(0.2, os._exit, (1,)).start()")
    time.sleep(4.5)  # the gateway notices within KernelRestarter.time_to_dead (3 s)
    result = session.execute("print('not run')")
    assert result.lost is not None and "died" in result.lost
    assert result.stdout == ""
    assert session.execute("print('run')").stdout == "run\n"


def test_kernel_deleted_behind_our_back_is_noticed_and_replaced(
    session: GatewaySession, kernel_gateway: KernelGateway
) -> None:
    old = session.kernel_id
    assert old is not None
    threading.Timer(0.5, delete_kernel, (kernel_gateway, old)).start()
    started = time.monotonic()
    result = session.execute("import time\ntime.sleep(30)", timeout_s=25)
    assert time.monotonic() - started < 10
    assert result.lost is not None and "no longer has the kernel" in result.lost
    assert session.execute("print('new')").stdout == "new\n"
    assert session.kernel_id not in (None, old)


def test_restart_from_another_thread_ends_the_running_cell(session: GatewaySession) -> None:
    session.execute("kept = 1")
    timer = threading.Timer(0.5, session.restart)
    timer.start()
    result = session.execute("import time\ntime.sleep(20)")
    timer.join()
    assert result.lost is not None and "restarted" in result.lost
    assert session.execute("print('kept' in dir())").stdout == "False\n"


def test_executor_close_closes_its_sessions(kernel_gateway: KernelGateway) -> None:
    ex = GatewayExecutor(kernel_gateway.url, token=kernel_gateway.token)
    session = ex.open()
    kernel_id = session.kernel_id
    assert kernel_id is not None
    ex.close()
    assert session.state is SessionState.CLOSED
    assert not kernel_exists(kernel_gateway, kernel_id)
    with pytest.raises(SessionClosed):
        session.execute("1")
    with pytest.raises(SessionClosed):
        ex.open()


def test_cli_exec_with_gateway_url_and_token_from_the_environment(
    kernel_gateway: KernelGateway,
) -> None:
    script = Path(sys.executable).parent / "codeinterp"
    args = [str(script), "exec", "--executor", "gateway", "--gateway-url", kernel_gateway.url]
    env = {**os.environ, "NO_COLOR": "1", "CODEINTERP_GATEWAY_TOKEN": kernel_gateway.token}
    done = subprocess.run(
        [*args, "--json", "-c", "x = 6 * 7", "-c", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    cells = [json.loads(line) for line in done.stdout.splitlines()]
    assert cells[1]["outputs"][0]["data"]["text/plain"] == "42"
    env.pop("CODEINTERP_GATEWAY_TOKEN")
    refused = subprocess.run(
        [*args, "-c", "1"], capture_output=True, text=True, timeout=120, env=env
    )
    assert refused.returncode == 2
    assert "CODEINTERP_GATEWAY_TOKEN" in refused.stderr
    missing = subprocess.run(
        [str(script), "exec", "--executor", "gateway", "-c", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert missing.returncode == 2 and "--gateway-url" in missing.stderr


def test_kernel_env_reaches_the_kernel(kernel_gateway: KernelGateway) -> None:
    # Kernel Gateway keeps KERNEL_* variables (and those it allows); Enterprise Gateway turns
    # KERNEL_CPUS, KERNEL_MEMORY_LIMIT... into the kernel pod's resources.
    env = {"KERNEL_CODEINTERP_TEST": "yes", "NOT_ALLOWED": "no"}
    ex = GatewayExecutor(kernel_gateway.url, token=kernel_gateway.token, kernel_env=env)
    with ex, ex.open() as s:
        code = "import os\nprint(os.environ.get('KERNEL_CODEINTERP_TEST'), "
        code += "os.environ.get('NOT_ALLOWED'))"
        assert s.execute(code).stdout == "yes None\n"
        assert len(s.execute("import matplotlib.pyplot as plt\nplt.plot([1])").images()) == 1


def test_dropped_connection_is_reopened_and_the_kernel_kept(session: GatewaySession) -> None:
    session.execute("kept = 'yes'")
    assert session._kernel is not None
    session._kernel.ws.abort()  # as a proxy or the network would: the kernel itself lives on
    time.sleep(0.2)
    assert session.execute("print(kept)").stdout == "yes\n"
    threading.Timer(0.5, session._kernel.ws.abort).start()
    result = session.execute("import time\ntime.sleep(2)\nprint('late')")
    assert result.lost is not None and "connection to the gateway was lost" in result.lost
    assert session.execute("print(kept)").stdout == "yes\n"
