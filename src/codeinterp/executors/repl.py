"""The `repl` executor: a long-lived worker interpreter per session (stdlib only).

Each session is one `python -m codeinterp.worker` child process speaking the framed pipe
protocol (worker/protocol.py). It keeps Jupyter-like semantics (trailing expression shown,
`display()`, matplotlib figures as PNG) but no sandbox: user code runs with the caller's
rights. Use `sandbox` for untrusted code.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any, Self

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
from codeinterp.executors.worker_process import WorkerChannel, WorkerProcess
from codeinterp.outputs import Execution
from codeinterp.worker.main import MPL_BACKEND


class WorkerSettings:
    """Options shared by the sessions of a worker-based executor."""

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        interrupt_grace_s: float = DEFAULT_INTERRUPT_GRACE_S,
        env: dict[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.interrupt_grace_s = interrupt_grace_s
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("MPLBACKEND", MPL_BACKEND)


class ReplSession:
    """One stateful worker interpreter; replaced by a fresh one if it dies."""

    keeps_worker = True  # False: a fresh interpreter for every cell (see subprocess.py)

    def __init__(self, settings: WorkerSettings, workspace: Workspace) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._settings = settings
        self._workspace = workspace
        self.workspace = workspace.path
        self._lock = threading.Lock()
        self._worker: WorkerChannel | None = None
        self._state = SessionState.IDLE
        if self.keeps_worker:
            self._start_worker()

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def pid(self) -> int | None:
        """The worker's process id (None between a death and its replacement)."""
        return self._worker.pid if self._worker is not None else None

    def _new_worker(self) -> WorkerChannel:
        return WorkerProcess(self.workspace, env=self._settings.env)

    def _start_worker(self) -> WorkerChannel:
        self._state = SessionState.STARTING
        self._worker = self._new_worker()
        self._state = SessionState.IDLE
        return self._worker

    def _request(self, code: str) -> dict[str, Any]:
        return {"op": "execute", "code": code}

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        if self._state is SessionState.CLOSED:
            raise SessionClosed()
        if not self._lock.acquire(blocking=False):
            raise SessionBusy()
        try:
            worker = self._worker
            if worker is None or not worker.alive():
                worker = self._start_worker()
            self._state = SessionState.BUSY
            collector = OutputCollector(
                max_chars=self._settings.max_output_chars, on_output=on_output
            )
            execution = worker.run(
                self._request(code),
                collector,
                timeout_s=self._settings.timeout_s if timeout_s is None else timeout_s,
                interrupt_grace_s=self._settings.interrupt_grace_s,
            )
            self._after_cell(execution)
            return execution
        finally:
            if not self.keeps_worker and self._worker is not None:
                self._worker.close()
                self._worker = None
            self._lock.release()

    def _after_cell(self, execution: Execution) -> None:
        if execution.lost is not None and self.keeps_worker:
            self._worker = None  # replaced lazily, on the same workspace, by the next cell
            self._state = SessionState.DEAD
        else:
            self._state = SessionState.IDLE

    def interrupt(self) -> None:
        if self._worker is not None and self._state is SessionState.BUSY:
            self._worker.interrupt()

    def restart(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionClosed(action="restart")
        with self._lock:
            if self._worker is not None:
                self._worker.close()
            self._start_worker()

    def close(self) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._workspace.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ReplExecutor:
    """Sessions backed by long-lived worker processes (no isolation)."""

    name = "repl"
    capabilities = Capabilities(stateful=True, can_kill=True, separate_process=True)
    session_class = ReplSession

    def __init__(self, **options: Any) -> None:
        self.settings = WorkerSettings(**options)
        self._sessions: list[ReplSession] = []
        self._closed = False

    def open(self, *, workspace: Path | None = None) -> ReplSession:
        if self._closed:
            raise SessionClosed("executor", "open a session")
        session = self.session_class(self.settings, Workspace(workspace))
        self._sessions = [s for s in self._sessions if s.state is not SessionState.CLOSED]
        self._sessions.append(session)
        return session

    def close(self) -> None:
        self._closed = True
        for session in self._sessions:
            session.close()
        self._sessions.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
