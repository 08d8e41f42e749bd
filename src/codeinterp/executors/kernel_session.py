"""The lifecycle of a session on a Jupyter kernel, wherever the kernel runs.

One cell at a time (another is refused: `SessionBusy`); a kernel whose state was lost is set
aside and the next cell gets a fresh one; `restart()` and `close()` end a running cell within
`POLL_S`, saying so in its `Execution.lost`. A backend supplies the kernel (a `KernelTransport`)
and says how to start, discard and shut one down.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from typing import Generic, Protocol, Self, TypeVar

from codeinterp import errors
from codeinterp.executors.base import OnOutput, SessionState
from codeinterp.executors.collect import OutputCollector
from codeinterp.executors.kernel_conversation import KernelConversation, KernelTransport
from codeinterp.outputs import Execution

K = TypeVar("K", bound=KernelTransport)


class CellLimits(Protocol):
    """The executor's defaults for each cell of its sessions."""

    timeout_s: float
    max_output_chars: int
    interrupt_grace_s: float


class KernelSession(ABC, Generic[K]):
    """A session whose kernel (`_kernel`) is replaced whenever its state is lost."""

    def __init__(self, limits: CellLimits) -> None:
        self.id = uuid.uuid4().hex
        self._limits = limits
        self._kernel: K | None = None
        self._busy = threading.Lock()  # held by whoever drives the kernel's connection
        self._closed = False
        self._stop_reason: str | None = None  # set by close()/restart() to end a running cell
        self._state = SessionState.STARTING

    @abstractmethod
    def _connect(self) -> K:
        """The kernel, answering and set up: the current one, or a new one (SessionStartError)."""

    @abstractmethod
    def _discard_kernel(self) -> None:
        """The kernel's state is lost: the next `_connect` must not reuse it as it is."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Stop the kernel and remove what the session owns (once, from `close()`)."""

    def _reset_kernel(self) -> None:
        """Before `restart()` connects again: make sure that gives fresh state."""
        self._discard_kernel()

    @property
    def state(self) -> SessionState:
        return SessionState.CLOSED if self._closed else self._state

    def _open(self) -> None:
        """The first kernel, for the constructor; if it fails, the session is closed."""
        try:
            with self._busy:
                self._ensure_kernel()
        except BaseException:
            self.close()
            raise

    def _ensure_kernel(self) -> K:
        self._state = SessionState.STARTING
        try:
            kernel = self._connect()
        except BaseException:
            self._state = SessionState.DEAD
            raise
        self._state = SessionState.IDLE
        return kernel

    def _conversation(self, kernel: K) -> KernelConversation:
        return KernelConversation(
            kernel,
            interrupt_grace_s=self._limits.interrupt_grace_s,
            stop_reason=lambda: self._stop_reason,
            on_lost=self._lose,
        )

    def _lose(self) -> None:
        self._discard_kernel()
        self._state = SessionState.DEAD

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        """Run one cell; errors in `code`, timeouts and kernel deaths come back as data."""
        if not self._busy.acquire(blocking=False):
            raise errors.SessionBusy()
        try:
            if self._closed:
                raise errors.SessionClosed()
            kernel = self._ensure_kernel()
            self._state = SessionState.BUSY
            out = OutputCollector(max_chars=self._limits.max_output_chars, on_output=on_output)
            limit_s = self._limits.timeout_s if timeout_s is None else timeout_s
            return self._conversation(kernel).run(code, limit_s, out)
        finally:
            if self._state is SessionState.BUSY:
                self._state = SessionState.IDLE
            self._busy.release()

    def interrupt(self) -> None:
        """Send the running cell a KeyboardInterrupt; safe from any thread."""
        kernel = self._kernel
        if self._state is SessionState.BUSY and kernel is not None:
            kernel.interrupt()

    def restart(self) -> None:
        """Fresh kernel state, same workspace. A running cell is ended (its Execution says so)."""
        if self._closed:
            raise errors.SessionClosed(action="restart the session")
        self._stop_reason = "restarted: the session was reset during this cell"
        with self._busy:  # a running cell sees _stop_reason and returns within POLL_S
            self._stop_reason = None
            if self._closed:
                raise errors.SessionClosed(action="restart the session")
            self._reset_kernel()
            self._ensure_kernel()

    def close(self) -> None:
        """Stop the kernel and every process it started; remove what the session owns.
        Idempotent; a running cell is ended."""
        if self._closed:
            return
        self._stop_reason = "session closed"
        with self._busy:
            if self._closed:
                return
            self._closed, self._stop_reason = True, None
            self._shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
