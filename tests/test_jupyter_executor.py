"""Behaviours of the `jupyter` backend beyond the shared conformance suite.

Kernels that misbehave on purpose: segfaults, `os._exit`, ignored interrupts, daemon children,
stray messages of other requests, concurrent starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from codeinterp.errors import ConfigError, SessionBusy, SessionClosed  # noqa: E402
from codeinterp.executors import SessionState, get_executor  # noqa: E402
from codeinterp.executors.jupyter import JupyterExecutor, JupyterSession  # noqa: E402
from codeinterp.outputs import Stream  # noqa: E402
from tests.conftest import process_gone  # noqa: E402

TIMEOUT_S = 30.0
GRACE_S = 1.0


def kernel_pid(session: JupyterSession) -> int | None:
    kernel = session._kernel
    return None if kernel is None else kernel.pid


@pytest.fixture(scope="module")
def executor() -> Iterator[JupyterExecutor]:
    with JupyterExecutor(timeout_s=TIMEOUT_S, interrupt_grace_s=GRACE_S) as ex:
        yield ex


@pytest.fixture
def session(executor: JupyterExecutor) -> Iterator[JupyterSession]:
    with executor.open() as s:
        yield s


def test_registered_under_its_name() -> None:
    with get_executor("jupyter") as ex:
        assert isinstance(ex, JupyterExecutor)
        assert ex.capabilities.can_kill and not ex.capabilities.isolated


def test_unknown_kernel_name_is_a_config_error_naming_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match="python3"):
        JupyterExecutor("no-such-kernel")


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("import ctypes\nctypes.string_at(0)", "signal 11 (SIGSEGV)"),
        ("import os\nos._exit(3)", "exit 3"),
    ],
)
def test_dead_kernel_is_reported_fast_and_the_next_cell_runs_fresh(
    session: JupyterSession, code: str, cause: str
) -> None:
    session.execute("x = 1")
    started = time.monotonic()
    result = session.execute(code)
    assert time.monotonic() - started < 3.0  # not after the 30 s timeout
    assert result.lost == cause
    assert not result.timed_out
    assert session.state is SessionState.DEAD
    after = session.execute("print('back')\nx")
    assert after.stdout == "back\n"
    assert after.error is not None and after.error.ename == "NameError"
    assert session.state is SessionState.IDLE


def test_kernel_ignoring_the_interrupt_is_killed_and_replaced(session: JupyterSession) -> None:
    session.execute("kept = 1\nopen('file.txt', 'w').write('still here')")
    old_pid = kernel_pid(session)
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    started = time.monotonic()
    result = session.execute(code, timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + GRACE_S + 2.0
    assert result.timed_out
    assert result.lost is not None and result.lost.startswith("timeout")
    assert old_pid is not None and process_gone(old_pid)
    after = session.execute("print(open('file.txt').read())\nkept")
    assert after.stdout == "still here\n"
    assert after.error is not None and after.error.ename == "NameError"
    assert kernel_pid(session) != old_pid


def test_interrupted_timeout_keeps_state_and_the_keyboard_interrupt(
    session: JupyterSession,
) -> None:
    session.execute("kept = 'yes'")
    result = session.execute("import time\nwhile True:\n    time.sleep(0.01)", timeout_s=0.5)
    assert result.timed_out and result.lost is None
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"
    assert session.execute("print(kept)").stdout == "yes\n"


@pytest.mark.parametrize("ignore_interrupt", [False, True])
def test_output_of_a_timed_out_cell_never_appears_in_the_next(
    session: JupyterSession, ignore_interrupt: bool
) -> None:
    code = (
        "import time\nfor i in range(9999):\n    print('tick', i, flush=True)\n    time.sleep(0.01)"
    )
    if ignore_interrupt:
        code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + code
    result = session.execute(code, timeout_s=0.5)
    assert result.timed_out and "tick 0" in result.stdout
    for _ in range(3):
        nxt = session.execute("import time\ntime.sleep(0.1)\nprint('next')")
        assert nxt.outputs == [Stream("stdout", "next\n")]


def test_messages_of_other_requests_are_discarded(session: JupyterSession) -> None:
    kernel = session._kernel
    assert kernel is not None
    kernel.kc.execute("print('stray')\n'stray value'")  # a request this session did not make
    result = session.execute("print('mine')")
    assert result.outputs == [Stream("stdout", "mine\n")]


def test_cell_with_no_output_completes_with_its_execution_count(session: JupyterSession) -> None:
    first = session.execute("a = 1")
    second = session.execute("b = 2")
    assert first.outputs == [] and first.ok
    assert first.execution_count is not None
    assert second.execution_count == first.execution_count + 1


def test_plt_show_twice_gives_two_pngs(session: JupyterSession) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2]); plt.show()\n"
        "plt.plot([2, 1]); plt.show()\n"
    )
    result = session.execute(code)
    images = result.images("image/png")
    assert len(images) == 2
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)


def test_many_stream_switches_lose_nothing_and_keep_each_streams_order(
    session: JupyterSession,
) -> None:
    """ipykernel publishes stdout and stderr separately; our kernel-side hook keeps them
    interleaved in ordinary use (see the conformance suite), but under a loaded machine the
    last switches of a 500-switch flood have been seen to arrive merged. What must hold
    always: nothing is lost and each stream keeps its own order."""
    result = session.execute(
        "import sys\nfor i in range(500):\n    print(i)\n    print(i, file=sys.stderr)"
    )
    expected = "".join(f"{i}\n" for i in range(500))
    assert result.stdout == expected
    assert result.stderr == expected


def test_invalid_utf8_at_fd_level_is_replaced(session: JupyterSession) -> None:
    result = session.execute("import os\nos.write(1, b'fd \\xff\\xfe level\\n')")
    assert result.error is None
    assert "fd \ufffd\ufffd level" in result.stdout


def test_fd_output_written_as_the_cell_ends_belongs_to_that_cell(session: JupyterSession) -> None:
    for _ in range(20):  # it used to arrive after the reply, and was dropped
        result = session.execute("import os\nos.write(1, b'out\\n')\nos.write(2, b'err\\n');")
        assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_kernel_runs_in_the_workspace_without_running_planted_modules(
    executor: JupyterExecutor, tmp_path: Path
) -> None:
    (tmp_path / "ipykernel_launcher.py").write_text("raise SystemExit('planted module ran')\n")
    (tmp_path / "sitecustomize.py").write_text("raise SystemExit('planted module ran')\n")
    with executor.open(workspace=tmp_path) as s:
        result = s.execute("import os, sys\nprint(os.getcwd())\nprint(sys.flags.safe_path)")
        assert result.stdout == f"{tmp_path.resolve()}\nTrue\n"
        assert s.execute("import os\nos.environ['MPLBACKEND']").result is not None


def test_close_leaves_neither_kernel_nor_daemon_child(executor: JupyterExecutor) -> None:
    session = executor.open()
    session.execute(
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '1000'], start_new_session=False)\n"
        "open('child.pid', 'w').write(str(child.pid))"
    )
    child_pid = int((session.workspace / "child.pid").read_text())
    pid = kernel_pid(session)
    assert pid is not None
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 5.0
    assert process_gone(pid, timeout_s=0.5)  # a zombie left to PID 1 counts as gone
    assert process_gone(child_pid, timeout_s=0.5)
    assert session.state is SessionState.CLOSED
    assert not session.workspace.exists()  # a temporary workspace is removed


def test_states_busy_and_closed_refuse_with_precise_errors(executor: JupyterExecutor) -> None:
    session = executor.open()
    assert session.state is SessionState.IDLE
    thread = threading.Thread(target=session.execute, args=("import time\ntime.sleep(1)",))
    thread.start()
    deadline = time.monotonic() + 5
    while session.state is not SessionState.BUSY and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(SessionBusy):
        session.execute("1")
    thread.join()
    session.close()
    with pytest.raises(SessionClosed):
        session.execute("1")
    with pytest.raises(SessionClosed):
        session.restart()


def test_close_during_a_running_cell_ends_it(executor: JupyterExecutor) -> None:
    session = executor.open()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(session.execute("import time\ntime.sleep(20)"))
    )
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    session.close()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5.0
    assert results and results[0].lost == "session closed"


@pytest.mark.slow
def test_concurrent_session_starts_do_not_race(executor: JupyterExecutor) -> None:
    sessions: list[JupyterSession] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            sessions.append(executor.open())
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        assert [s.execute("print(7 * 6)").stdout for s in sessions] == ["42\n"] * 4
    finally:
        for s in sessions:
            s.close()
