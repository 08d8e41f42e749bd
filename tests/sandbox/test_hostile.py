"""Hostile code against the sandbox executor: each attack ends with a clear result, the host and
other sessions unaffected, and the attacked session's workspace intact.

Runs as root (cgroups, per-session uid) and, in CI, again as a non-root user (user namespaces,
rlimits instead of cgroups where the machine gives no cgroup).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.executors.sandbox import SandboxExecutor, SandboxSession
from codeinterp.sandbox.policy import MiB, SandboxPolicy
from tests.conftest import process_gone, process_tree

POLICY = SandboxPolicy(
    memory_bytes=256 * MiB,
    pids_max=64,
    tmp_bytes=32 * MiB,
    workspace_bytes=48 * MiB,
    workspace_inodes=2_000,
    max_file_bytes=32 * MiB,
)
MARKER = "precious data"


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    os.environ["CODEINTERP_TEST_API_KEY"] = "sk-host-secret-0123456789"
    try:
        with SandboxExecutor(policy=POLICY, timeout_s=20, interrupt_grace_s=1.0) as ex:
            yield ex
    finally:
        del os.environ["CODEINTERP_TEST_API_KEY"]


@pytest.fixture
def victim(executor: SandboxExecutor) -> Iterator[SandboxSession]:
    """The session under attack, holding a file that must survive whatever happens."""
    with executor.open() as s:
        s.execute(f"open('keep.txt', 'w').write({MARKER!r})")
        yield s
        # Afterwards: the session answers, its files are intact, another session works too.
        after = s.execute("print(open('keep.txt').read())", timeout_s=20)
        assert after.stdout == MARKER + "\n", after
        assert (s.workspace / "keep.txt").read_text() == MARKER


@pytest.fixture
def witness(executor: SandboxExecutor) -> Iterator[SandboxSession]:
    with executor.open() as s:
        yield s
        assert s.execute("print(6 * 7)").stdout == "42\n"


def test_infinite_loop_times_out_and_session_keeps_state(victim: SandboxSession) -> None:
    victim.execute("state = 'kept'")
    result = victim.execute("while True:\n    pass", timeout_s=1)
    assert result.timed_out and result.lost is None
    assert victim.execute("print(state)").stdout == "kept\n"


def test_c_loop_ignoring_sigint_is_killed_and_replaced(victim: SandboxSession) -> None:
    started = time.monotonic()
    # A builtin's C loop never looks at pending signals: SIGINT cannot stop it.
    result = victim.execute("sum(range(10**13))", timeout_s=1)
    assert time.monotonic() - started < 8
    assert result.timed_out
    assert result.lost is not None and "timeout" in result.lost
    assert victim.execute("print('fresh')").stdout == "fresh\n"


def test_memory_bomb_is_stopped(victim: SandboxSession, witness: SandboxSession) -> None:
    result = victim.execute("hog = b'x' * (1 << 30)\nprint('allocated')", timeout_s=20)
    assert "allocated" not in result.stdout
    if result.lost is not None:  # cgroup: the kernel killed the session
        assert "memory limit" in result.lost
    else:  # rlimit: the allocation failed inside the session
        assert result.error is not None and result.error.ename == "MemoryError"


def test_fork_bomb_is_contained(victim: SandboxSession, witness: SandboxSession) -> None:
    code = (
        "import os\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            import time; time.sleep(30); os._exit(0)\n"
        "        children += 1\n"
        "except OSError as exc:\n"
        "    print('stopped after', children, type(exc).__name__)\n"
    )
    result = victim.execute(code, timeout_s=20)
    assert "stopped after" in result.stdout
    assert int(result.stdout.split()[2]) < POLICY.pids_max
    assert os.fork  # the host can still fork: this test process is alive and well
    victim.restart()  # the sleeping children go with the old interpreter


def test_disk_fill_fails_cleanly(victim: SandboxSession) -> None:
    code = (
        "try:\n"
        "    with open('fill.bin', 'wb') as f:\n"
        "        for _ in range(1024):\n"
        "            f.write(b'0' * (1 << 20))\n"
        "except OSError as exc:\n"
        "    print('refused:', exc.strerror)\n"
    )
    result = victim.execute(code, timeout_s=20)
    assert "refused:" in result.stdout
    victim.execute("import os; os.remove('fill.bin')")


def test_tmp_fill_fails_cleanly(victim: SandboxSession) -> None:
    code = (
        "try:\n"
        "    with open('/tmp/fill.bin', 'wb') as f:\n"
        "        for _ in range(1024):\n"
        "            f.write(b'0' * (1 << 20))\n"
        "except OSError as exc:\n"
        "    print('refused:', exc.strerror)\n"
    )
    assert "refused:" in victim.execute(code, timeout_s=20).stdout


def test_many_files_hit_the_inode_limit_or_finish(victim: SandboxSession) -> None:
    code = (
        "import os\nos.makedirs('many', exist_ok=True)\nmade = 0\n"
        "try:\n"
        "    for i in range(5000):\n"
        "        open(f'many/{i}', 'w').close(); made += 1\n"
        "except OSError as exc:\n"
        "    print('refused:', exc.strerror)\n"
        "print('made', made)\n"
    )
    result = victim.execute(code, timeout_s=20)
    assert "made" in result.stdout
    victim.execute("import shutil; shutil.rmtree('many')")


def test_output_flood_is_capped(victim: SandboxSession) -> None:
    result = victim.execute("while True:\n    print('x' * 1000)", timeout_s=2)
    assert result.timed_out
    assert result.truncated_chars > 0
    assert len(result.stdout) < 1_100_000


def test_os_exit_is_reported(victim: SandboxSession) -> None:
    result = victim.execute("import os\nos._exit(1)")
    assert result.lost == "exit 1"


def test_segfault_is_reported(victim: SandboxSession) -> None:
    result = victim.execute("import ctypes\nctypes.string_at(0)")
    assert result.lost is not None and "SIGSEGV" in result.lost


def test_host_secret_files_are_unreadable(victim: SandboxSession, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host-only secret")
    secret.chmod(0o600)
    for path in ("/etc/shadow", str(secret), "/root/.bash_history", "/proc/1/root/etc/shadow"):
        result = victim.execute(f"print(open({path!r}).read())")
        assert result.error is not None, path
        assert result.error.ename in ("PermissionError", "FileNotFoundError"), result.error
        assert "secret" not in result.stdout


def test_other_sessions_workspace_is_invisible(
    victim: SandboxSession, witness: SandboxSession
) -> None:
    witness.execute("open('mine.txt', 'w').write('witness private')")
    other = str(witness.workspace / "mine.txt")
    result = victim.execute(f"print(open({other!r}).read())")
    assert result.error is not None
    assert "witness private" not in result.stdout
    listing = victim.execute(
        "import os\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))"
    )
    assert listing.stdout.strip() == "['1']"  # only its own processes


def test_writing_outside_the_workspace_fails(victim: SandboxSession) -> None:
    for path in ("/usr/evil", "/etc/evil", "/evil", "/workspace/../evil"):
        result = victim.execute(f"open({path!r}, 'w').write('x')")
        assert result.error is not None, path
        assert result.error.ename in ("OSError", "PermissionError"), result.error
    assert not Path("/usr/evil").exists() and not Path("/etc/evil").exists()
    private = victim.execute("open('/tmp/private.txt', 'w').write('in sandbox')\nprint('ok')")
    assert private.stdout == "ok\n"
    assert not Path("/tmp/private.txt").exists()


def test_host_loopback_service_is_unreachable(victim: SandboxSession) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    server.settimeout(3)
    thread = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    thread.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result = victim.execute(code)
    thread.join()
    server.close()
    assert result.error is not None
    assert result.error.ename in ("PermissionError", "OSError", "ConnectionRefusedError")
    assert not accepted


def _accept(server: socket.socket, accepted: list[socket.socket]) -> None:
    try:
        accepted.append(server.accept()[0])
    except OSError:
        pass


def test_daemon_does_not_outlive_the_session(executor: SandboxExecutor) -> None:
    session = executor.open()
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True: time.sleep(0.1)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    assert session.execute(code).error is None
    assert session.pid is not None
    tree = process_tree(session.pid)
    assert len(tree) >= 2  # the worker and the daemon it adopted as PID 1
    session.close()
    assert all(process_gone(pid) for pid in tree)


def test_host_environment_does_not_leak(victim: SandboxSession, executor: SandboxExecutor) -> None:
    result = victim.execute(
        "import os\nprint(sorted(os.environ))\nprint(open('/proc/1/environ').read())"
    )
    assert "CODEINTERP_TEST_API_KEY" not in result.stdout
    assert "sk-host-secret" not in result.stdout
    with open(f"/proc/{executor.template.process.pid}/environ", "rb") as f:
        assert b"sk-host-secret" not in f.read()


def test_isolation_is_verified_from_the_host(victim: SandboxSession) -> None:
    isolation = victim.isolation
    assert isolation is not None
    assert isolation.uid != 0
    assert isolation.no_new_privs and isolation.seccomp_mode == 2
    assert isolation.cap_effective == 0
    assert all(isolation.namespaces[ns] for ns in ("pid", "mnt", "net", "ipc", "uts"))


def test_a_new_session_on_a_used_workspace_reads_its_files(
    executor: SandboxExecutor, tmp_path: Path
) -> None:
    workspace = tmp_path / "kept"
    workspace.mkdir()
    with executor.open(workspace=workspace) as first:
        first.execute("open('notes.txt', 'w').write('from the first session')")
    with executor.open(workspace=workspace) as second:
        assert second.execute("print(open('notes.txt').read())").stdout == (
            "from the first session\n"
        )
