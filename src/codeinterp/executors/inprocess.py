"""The `inprocess` executor: `exec()` in the caller's own process. Trusted code only.

It isolates nothing: user code shares the caller's memory, files, environment and rights, and
while a cell runs, `sys.stdout`/`sys.stderr` and the working directory of the whole process
are the session's. A timeout interrupts the cell (KeyboardInterrupt raised in its thread); a
cell that ignores the interrupt cannot be killed: its thread is abandoned, still running, and
the session continues with a fresh namespace. Useful for tests and embedding; never a default.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
import warnings
from pathlib import Path

from codeinterp.errors import SessionBusy, SessionClosed
from codeinterp.executors.base import (
    DEFAULT_INTERRUPT_GRACE_S,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_TIMEOUT_S,
    Capabilities,
    OnOutput,
    SessionState,
    Workspace,
)
from codeinterp.executors.collect import OutputCollector
from codeinterp.outputs import Error, Execution, Output, Stream
from codeinterp.worker.runner import CellRunner
from codeinterp.worker.streams import EmitStream, OutputMux

WARNING = (
    "The inprocess executor isolates nothing: model-written code runs inside this process "
    "with all its rights. Use it only for trusted code; use the default executor otherwise."
)
_MPL_BACKEND = "module://codeinterp.worker.mplbackend"


def _use_session_backend() -> None:
    """Make matplotlib draw off-screen and route plt.show() to the cell's outputs."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].switch_backend(_MPL_BACKEND)
    else:
        os.environ["MPLBACKEND"] = _MPL_BACKEND


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    ident = thread.ident
    if ident is not None:
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


class InProcessSession:
    def __init__(self, executor: InProcessExecutor, workspace: Workspace) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._executor = executor
        self._workspace = workspace
        self.workspace = workspace.path
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state = SessionState.IDLE
        self._collector: OutputCollector | None = None
        self._runner = self._new_runner()

    @property
    def state(self) -> SessionState:
        return self._state

    def _new_runner(self) -> CellRunner:
        return CellRunner(self._emit)

    def _emit(self, output: Output) -> None:
        collector = self._collector
        if collector is None:
            return  # output of an abandoned cell: it belongs to no cell any more
        if isinstance(output, Stream):
            collector.stream(output.name, output.text)
        else:
            collector.display(output)

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        if self._state is SessionState.CLOSED:
            raise SessionClosed()
        if not self._lock.acquire(blocking=False):
            raise SessionBusy()
        try:
            return self._execute(code, timeout_s, on_output)
        finally:
            self._lock.release()

    def _execute(self, code: str, timeout_s: float | None, on_output: OnOutput | None) -> Execution:
        settings = self._executor
        collector = OutputCollector(max_chars=settings.max_output_chars, on_output=on_output)
        self._collector = collector
        mux = OutputMux(self._emit)
        runner = self._runner
        runner.emit = mux.emit
        result: list[Error | None] = []
        saved = sys.stdout, sys.stderr, os.getcwd()

        def run() -> None:
            result.append(runner.run(code))
            mux.flush()

        self._state = SessionState.BUSY
        sys.stdout, sys.stderr = EmitStream("stdout", mux), EmitStream("stderr", mux)
        os.chdir(self.workspace)
        thread = threading.Thread(target=run, name=f"codeinterp-cell-{self.id}", daemon=True)
        self._thread = thread
        try:
            thread.start()
            thread.join(settings.timeout_s if timeout_s is None else timeout_s)
            timed_out = thread.is_alive()
            if timed_out:
                _raise_in_thread(thread, KeyboardInterrupt)
                thread.join(settings.interrupt_grace_s)
        finally:
            sys.stdout, sys.stderr = saved[0], saved[1]
            os.chdir(saved[2])
            self._collector = None
        if thread.is_alive():
            self._runner = self._new_runner()
            self._state = SessionState.IDLE
            return collector.finish(
                timed_out=True,
                lost="timeout: the cell ignored the interrupt; the inprocess executor cannot "
                "kill it, so it was abandoned and the session's variables were reset",
            )
        self._state = SessionState.IDLE
        mux.flush()
        return collector.finish(
            error=result[0] if result else None,
            execution_count=runner.execution_count,
            timed_out=timed_out,
        )

    def interrupt(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            _raise_in_thread(thread, KeyboardInterrupt)

    def restart(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionClosed(action="restart")
        with self._lock:
            self._runner = self._new_runner()

    def close(self) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        self._workspace.cleanup()

    def __enter__(self) -> InProcessSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InProcessExecutor:
    """Sessions that run in this very process: no isolation, no kill. Trusted code only."""

    name = "inprocess"
    capabilities = Capabilities(stateful=True, can_kill=False, separate_process=False)

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        interrupt_grace_s: float = DEFAULT_INTERRUPT_GRACE_S,
    ) -> None:
        warnings.warn(WARNING, RuntimeWarning, stacklevel=2)
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.interrupt_grace_s = interrupt_grace_s
        self._closed = False
        _use_session_backend()

    def open(self, *, workspace: Path | None = None) -> InProcessSession:
        if self._closed:
            raise SessionClosed("executor", "open a session")
        return InProcessSession(self, Workspace(workspace))

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
