"""The executor contract: an `Executor` opens `Session`s; a session runs cells.

Every backend (sandbox, jupyter, repl, subprocess, inprocess, ...) implements these two
protocols and passes the shared conformance suite (tests/conformance/). What a backend cannot
do is declared in its `Capabilities`, never discovered by surprise.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from codeinterp.errors import SessionClosed
from codeinterp.outputs import Execution, Output

OnOutput = Callable[[Output], None]

DEFAULT_TIMEOUT_S = 60.0
# Characters of stream output kept per cell (head + tail); the rest is cut with a marker.
DEFAULT_MAX_OUTPUT_CHARS = 1_000_000
# How long an interrupted cell may take to stop before its interpreter is killed.
DEFAULT_INTERRUPT_GRACE_S = 2.0


@dataclass(frozen=True)
class Capabilities:
    """What a backend can and cannot do; the conformance suite reads this."""

    stateful: bool = True
    """Variables survive from one cell to the next (False: every cell starts fresh)."""
    can_kill: bool = True
    """A cell that ignores the interrupt can be stopped by killing its interpreter."""
    separate_process: bool = True
    """User code runs outside the caller's process (close() leaves no process behind)."""
    isolated: bool = False
    """User code is confined by a sandbox (namespaces, seccomp, limits)."""
    local_workspace: bool = True
    """`session.workspace` is a directory on this machine (False: it is on a remote host)."""
    reports_exit_cause: bool = True
    """A dead interpreter's exit code or signal is known and put in `Execution.lost`."""


class SessionState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"
    CLOSED = "closed"


@runtime_checkable
class Session(Protocol):
    """One live, stateful interpreter with its own workspace directory."""

    id: str
    workspace: Path

    @property
    def state(self) -> SessionState: ...

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        """Run one cell. Errors in `code` come back as data in the `Execution`."""
        ...

    def interrupt(self) -> None:
        """Ask the running cell to stop (KeyboardInterrupt), as Ctrl-C would."""
        ...

    def restart(self) -> None:
        """Fresh interpreter state; the workspace and its files are kept."""
        ...

    def close(self) -> None:
        """Stop the interpreter and every process it started. Idempotent."""
        ...

    def __enter__(self) -> Session: ...

    def __exit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class Executor(Protocol):
    """A factory of sessions; owns whatever sessions share (pools, connections)."""

    name: str
    capabilities: Capabilities

    def open(self, *, workspace: Path | None = None) -> Session:
        """Open a session. Without `workspace`, a temporary one is made and removed on close."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc_info: object) -> None: ...


class SessionTracker:
    """What every executor does with its sessions: remember the open ones, refuse new ones once
    closed, and close them all on `close()` (also as a context manager)."""

    _closed: bool = False

    def _track(self, session: Session) -> None:
        if not hasattr(self, "_open_sessions"):
            self._open_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._open_sessions.add(session)

    def _ensure_open(self) -> None:
        if self._closed:
            raise SessionClosed("executor", "open a session")

    def close(self) -> None:
        self._closed = True
        for session in list(getattr(self, "_open_sessions", ())):
            session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Workspace:
    """A session's working directory: the caller's, or a temporary one we own and remove."""

    def __init__(self, path: Path | None) -> None:
        self.owned = path is None
        self.path = (
            Path(tempfile.mkdtemp(prefix="codeinterp-ws-"))
            if path is None
            else Path(path).resolve()
        )
        self.path.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def describe_exit(returncode: int | None) -> str:
    """A person-readable cause from a process's return code: "signal 11 (SIGSEGV)", "exit 1"."""
    import signal

    if returncode is None:
        return "unknown cause"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit {returncode}"
