"""The executor contract, checked against every backend.

Each backend passes every test here, except where its `Capabilities` declare it cannot
(`stateful=False`: nothing survives a cell; `can_kill=False`: a cell that ignores the interrupt
cannot be stopped; `separate_process=False`: user code runs in the caller's process;
`local_workspace=False`: the workspace is on another host, checked from inside the session;
`reports_exit_cause=False`: a death is reported, but not its exit code or signal).

The `gateway` backend runs against a real `jupyter kernelgateway` on loopback (tests/conftest.py).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.errors import SessionClosed
from codeinterp.executors import Executor, Session, get_executor
from codeinterp.outputs import Display, Output, Stream
from tests.conftest import process_gone, process_tree

BACKENDS = ["sandbox", "repl", "subprocess", "inprocess", "jupyter", "gateway"]
CELL_TIMEOUT_S = 30.0
GRACE_S = 1.0


@pytest.fixture(scope="module", params=BACKENDS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    options = {}
    if request.param == "gateway":
        gateway = request.getfixturevalue("kernel_gateway")
        options = {"url": gateway.url, "token": gateway.token}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inprocess warns that it isolates nothing
        ex = get_executor(
            request.param, timeout_s=CELL_TIMEOUT_S, interrupt_grace_s=GRACE_S, **options
        )
    with ex:
        yield ex


@pytest.fixture
def session(executor: Executor) -> Iterator[Session]:
    with executor.open() as s:
        yield s


def test_state_persists_between_cells(executor: Executor, session: Session) -> None:
    session.execute("x = 41")
    result = session.execute("print(x + 1)")
    if executor.capabilities.stateful:
        assert result.error is None
        assert result.stdout == "42\n"
    else:
        assert result.error is not None and result.error.ename == "NameError"


def test_trailing_expression_value_is_shown(session: Session) -> None:
    result = session.execute("a = 6\na * 7")
    assert result.ok
    assert result.result is not None
    assert result.result.text == "42"


def test_trailing_expression_hidden_by_semicolon_and_none(session: Session) -> None:
    assert session.execute("1 + 1;").result is None
    assert session.execute("None").result is None


def test_stdout_and_stderr_are_separated_and_in_order(session: Session) -> None:
    code = "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')"
    result = session.execute(code)
    streams = [(o.name, o.text) for o in result.outputs if isinstance(o, Stream)]
    assert streams == [("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]
    assert result.stdout == "one\nthree\n"
    assert result.stderr == "two\n"


def test_exception_is_returned_as_data_with_clean_traceback(session: Session) -> None:
    result = session.execute("def f(n):\n    return 10 / n\n\nprint('before')\nf(0)")
    assert result.stdout == "before\n"
    assert result.error is not None
    assert result.error.ename == "ZeroDivisionError"
    assert result.error.evalue == "division by zero"
    text = "\n".join(result.error.traceback)
    assert "return 10 / n" in text  # the user's own line is shown
    assert "\x1b[" not in text  # no terminal colour codes
    for internal in ("codeinterp/worker", "ipykernel", "codeinterp/executors"):
        assert internal not in text
    assert not result.ok


def test_syntax_error_is_data(session: Session) -> None:
    result = session.execute("def broken(:\n    pass")
    assert result.error is not None
    assert result.error.ename == "SyntaxError"


def test_cell_without_output_completes(session: Session) -> None:
    result = session.execute("y = 1")
    assert result.ok
    assert result.outputs == []


def test_matplotlib_show_and_open_figures_come_back_as_png(session: Session) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "plt.show()\n"
        "plt.figure()\n"
        "plt.bar(['a', 'b'], [3, 4])\n"
    )
    result = session.execute(code)
    assert result.error is None
    images = result.images("image/png")
    assert len(images) == 2
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert session.execute("print(len(plt.get_fignums()) if 'plt' in dir() else 0)").stdout in (
        "0\n",
        "",
    )


def test_rich_value_has_html_and_text(session: Session) -> None:
    code = (
        "class Table:\n"
        "    def _repr_html_(self):\n"
        "        return '<table><tr><td>1</td></tr></table>'\n"
        "    def __repr__(self):\n"
        "        return 'Table(1)'\n"
        "Table()"
    )
    value = session.execute(code).result
    assert value is not None
    assert value.data["text/html"] == "<table><tr><td>1</td></tr></table>"
    assert value.data["text/plain"] == "Table(1)"


def test_display_shows_rich_output_mid_cell(session: Session) -> None:
    result = session.execute("print('a')\ndisplay(123)\nprint('b')")
    assert result.error is None
    kinds = [o.text if isinstance(o, Display) else o.text for o in result.outputs]
    assert kinds == ["a\n", "123", "b\n"]
    assert result.result is None


def test_outputs_are_streamed_to_callback_in_order(session: Session) -> None:
    seen: list[Output] = []
    result = session.execute("print('x')\ndisplay(5)\n7", on_output=seen.append)
    assert [o.text for o in seen] == ["x\n", "5", "7"]
    assert result.result is not None and result.result.text == "7"


def test_output_streams_while_cell_runs(session: Session) -> None:
    first_seen = threading.Event()
    started = time.monotonic()
    arrival: list[float] = []

    def on_output(output: Output) -> None:
        if not first_seen.is_set():
            arrival.append(time.monotonic() - started)
            first_seen.set()

    session.execute("import time\nprint('early', flush=True)\ntime.sleep(1.5)", on_output=on_output)
    assert arrival and arrival[0] < 1.2


def test_timeout_interrupts_cell_and_session_survives(executor: Executor, session: Session) -> None:
    session.execute("kept = 'yes'")
    started = time.monotonic()
    result = session.execute("while True:\n    pass", timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert elapsed < 1.0 + GRACE_S + 5.0
    after = session.execute("print('alive')")
    assert after.stdout == "alive\n"
    if executor.capabilities.stateful:
        assert result.lost is None
        assert session.execute("print(kept)").stdout == "yes\n"


def test_timed_out_output_never_leaks_into_next_cell(session: Session) -> None:
    code = (
        "import time\nfor i in range(1000):\n    print('tick', i, flush=True)\n    time.sleep(0.02)"
    )
    result = session.execute(code, timeout_s=0.5)
    assert result.timed_out
    assert "tick 0" in result.stdout
    nxt = session.execute("print('next')")
    assert nxt.stdout == "next\n"
    assert nxt.outputs == [Stream("stdout", "next\n")]


def test_cell_ignoring_interrupt_is_killed_and_replaced(
    executor: Executor, session: Session
) -> None:
    if not executor.capabilities.can_kill:
        pytest.skip(f"{executor.name} declares it cannot kill a cell")
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n"
        "    time.sleep(0.01)"
    )
    started = time.monotonic()
    result = session.execute(code, timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + GRACE_S + 10.0
    assert result.timed_out
    assert result.lost is not None
    assert session.execute("print('fresh')").stdout == "fresh\n"


def test_huge_output_is_capped_without_hanging(session: Session) -> None:
    code = "import sys\nfor i in range(200_000):\n    print('x' * 99)\nprint('THE END')"
    started = time.monotonic()
    result = session.execute(code, timeout_s=60)
    assert time.monotonic() - started < 60
    assert result.ok
    assert result.truncated_chars > 10_000_000
    assert "characters cut]" in result.stdout
    assert result.stdout.startswith("x" * 99 + "\n")
    assert result.stdout.endswith("THE END\n")
    assert len(result.stdout) < 1_100_000


def test_restart_clears_state_but_keeps_workspace_files(
    executor: Executor, session: Session
) -> None:
    session.execute("secret = 1\nopen('kept.txt', 'w').write('data')")
    session.restart()
    result = session.execute("print(open('kept.txt').read())\nsecret")
    assert result.stdout == "data\n"
    assert result.error is not None and result.error.ename == "NameError"
    if executor.capabilities.local_workspace:
        assert (session.workspace / "kept.txt").read_text() == "data"


def test_cells_run_in_the_session_workspace(executor: Executor, session: Session) -> None:
    session.execute("open('made-here.txt', 'w').write('hi')")
    if executor.capabilities.local_workspace:
        assert (session.workspace / "made-here.txt").read_text() == "hi"
    else:  # seen from inside: the session's directory on the remote host
        code = "import os\nprint(os.getcwd())\nprint(open('made-here.txt').read())"
        assert session.execute(code).stdout == f"{session.workspace}\nhi\n"


def test_given_workspace_is_used_and_kept_after_close(executor: Executor, tmp_path: Path) -> None:
    if not executor.capabilities.local_workspace:
        pytest.skip(f"{executor.name}: a workspace is a directory on the remote host")
    (tmp_path / "input.csv").write_text("a,b\n1,2\n")
    with executor.open(workspace=tmp_path) as s:
        assert s.execute("print(open('input.csv').read().splitlines()[1])").stdout == "1,2\n"
    assert (tmp_path / "input.csv").exists()


def test_unicode_output_survives(session: Session) -> None:
    text = "héllo wörld — 世界 🎉"
    assert session.execute(f"print({text!r})").stdout == text + "\n"


def test_invalid_utf8_output_survives(session: Session) -> None:
    code = "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')\nsys.stdout.flush()"
    result = session.execute(code)
    assert result.error is None
    assert "ok " in result.stdout and " end" in result.stdout
    assert "\ufffd" in result.stdout


def test_interrupt_from_another_thread_stops_the_cell(session: Session) -> None:
    timer = threading.Timer(0.5, session.interrupt)
    timer.start()
    started = time.monotonic()
    result = session.execute("import time\nwhile True:\n    time.sleep(0.01)", timeout_s=20)
    timer.join()
    assert time.monotonic() - started < 10
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"
    assert not result.timed_out
    assert session.execute("print(1)").stdout == "1\n"


def test_dead_interpreter_is_reported_and_replaced(executor: Executor, session: Session) -> None:
    if not executor.capabilities.separate_process:
        pytest.skip(f"{executor.name} runs in the caller's process")
    started = time.monotonic()
    result = session.execute("import os\nos._exit(3)", timeout_s=CELL_TIMEOUT_S)
    assert time.monotonic() - started < 5
    if executor.capabilities.stateful:
        assert result.lost is not None
        if executor.capabilities.reports_exit_cause:
            assert "exit 3" in result.lost
    assert session.execute("print('back')").stdout == "back\n"


def test_close_leaves_no_process_behind(executor: Executor) -> None:
    if not executor.capabilities.separate_process:
        pytest.skip(f"{executor.name} runs in the caller's process")
    session = executor.open()
    code = (
        "import os, subprocess\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(os.getpid(), child.pid)\n"
        "import time; time.sleep(0.1)\n"
    )
    if not executor.capabilities.stateful:
        # A stateless session's interpreter ends with the cell; its child must end too.
        result = session.execute(code)
        pids = [int(p) for p in result.stdout.split()]
        assert all(process_gone(pid) for pid in pids)
        session.close()
        return
    printed = [int(p) for p in session.execute(code).stdout.split()]
    # Seen from the host (a sandbox's pids are its own namespace's): the interpreter's tree.
    host_pid = getattr(session, "pid", None) or getattr(session, "kernel_pid", None)
    pids = process_tree(host_pid) if host_pid else set(printed)
    assert len(pids) >= 2  # the interpreter and its child
    session.close()
    assert all(process_gone(pid) for pid in pids)


def test_closed_session_refuses_to_execute(executor: Executor) -> None:
    session = executor.open()
    session.close()
    session.close()  # idempotent
    with pytest.raises(SessionClosed, match="closed"):
        session.execute("1")
