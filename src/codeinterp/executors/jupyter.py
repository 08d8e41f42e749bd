"""The `jupyter` backend: any Jupyter kernel (Python, R, Julia, bash...) through jupyter_client.

It fixes what stock Jupyter usage got wrong here (see SANDBOX-NOTES.md): kernels talk over the
`ipc` transport in a private directory, so concurrent starts never race for TCP ports; every
message is routed by its parent `msg_id`, so a timed-out cell never leaks into the next one; a
dead kernel is noticed within `POLL_S`, not at the timeout; and stopping a kernel kills its
whole process group, so no child of user code outlives the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

from codeinterp.errors import (
    ConfigError,
    DependencyMissing,
    SessionBusy,
    SessionClosed,
    SessionStartError,
)
from codeinterp.executors.base import (
    DEFAULT_INTERRUPT_GRACE_S,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_TIMEOUT_S,
    Capabilities,
    OnOutput,
    SessionState,
    Workspace,
    describe_exit,
)
from codeinterp.executors.collect import OutputCollector
from codeinterp.outputs import Display, Error, Execution, decode_bundle

POLL_S = 0.1  # a silent kernel is checked for death this often
START_TIMEOUT_S = 60.0
CLOSE_BUDGET_S = 2.0  # ask, then SIGTERM, then SIGKILL, within this
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

Message = dict[str, Any]


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _clean_traceback(lines: list[str]) -> list[str]:
    """ANSI codes stripped and IPython's `-----` ruler dropped: ename/evalue plus frames."""
    cleaned = (_strip_ansi(line) for line in lines)
    return [line for line in cleaned if line.strip().strip("-")]


def _descendants(root: int) -> list[int]:
    """Pids below `root`, read from /proc; finds children that left the kernel's group."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


class _Kernel:
    """One kernel process and its blocking client; a lost kernel is replaced, never revived."""

    def __init__(self, kernel_name: str, workspace: Path, rundir: Path) -> None:
        import zmq
        from jupyter_client.manager import KernelManager

        name = f"kernel-{uuid.uuid4().hex[:8]}"
        self.log = rundir / f"{name}.log"
        self.km: Any = KernelManager(
            kernel_name=kernel_name, transport="ipc", connection_file=str(rundir / f"{name}.json")
        )
        spec: Any = self.km.kernel_spec
        env = dict(os.environ)
        if spec.language.lower() == "python":
            env["MPLBACKEND"] = INLINE_BACKEND  # plots come back as image/png
        if kernel_name == "python3":  # -s -P: no user site, no planted modules from the cwd
            spec.argv = [sys.executable, "-s", "-P", "-m", "ipykernel_launcher"]
            spec.argv += ["-f", "{connection_file}"]
        with open(self.log, "wb") as log:
            self.km.start_kernel(cwd=str(workspace), env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.proc: subprocess.Popen[bytes] | None = getattr(self.km.provisioner, "process", None)
        self.pid: int | None = None if self.proc is None else self.proc.pid
        self.kc: Any = self.km.client()
        self.kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self._poller = zmq.Poller()
        self._poller.register(self.kc.iopub_channel.socket, zmq.POLLIN)
        self._poller.register(self.kc.shell_channel.socket, zmq.POLLIN)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for a kernel_info reply *and* its iopub status, proving iopub is subscribed."""
        deadline = time.monotonic() + timeout_s
        while True:
            msg_id, sent, replied = self.kc.kernel_info(), time.monotonic(), False
            # Resend after 1 s of silence, or 0.2 s after a reply whose iopub status was lost.
            while time.monotonic() - sent < (1.0 if not replied else 0.2):
                for channel, msg in self.receive(POLL_S):
                    if msg["parent_header"].get("msg_id") == msg_id:
                        if channel == "iopub" and replied:
                            return
                        replied = replied or channel == "shell"
                cause = self.exit_cause()
                if cause is not None:
                    raise SessionStartError(
                        f"The kernel died while starting ({cause}).{self.tail()}"
                    )
                if time.monotonic() > deadline:
                    raise SessionStartError(
                        f"The kernel did not answer within {timeout_s:.0f} s.{self.tail()}"
                    )

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_bytes()[-2000:].decode(errors="replace").strip()
            return f" Its last words:\n{text}" if text else ""
        return ""

    def receive(self, timeout_s: float) -> list[tuple[str, Message]]:
        """Every message ready on iopub and shell, after waiting at most `timeout_s` for one."""
        ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        msgs = []
        for name, channel in (("iopub", self.kc.iopub_channel), ("shell", self.kc.shell_channel)):
            if channel.socket in ready:
                while channel.msg_ready():
                    msgs.append((name, channel.get_msg(timeout=0)))
        return msgs

    def exit_cause(self) -> str | None:
        """Why the kernel process ended ("signal 11 (SIGSEGV)", "exit 3"), or None if alive."""
        if self.proc is not None:
            code = self.proc.poll()
            return None if code is None else describe_exit(code)
        return None if self.km.is_alive() else describe_exit(None)

    def interrupt(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.km.interrupt_kernel()

    def _signal_group(self, signum: int) -> None:
        """Signal the kernel's process group (jupyter_client starts it in a new session)."""
        if self.pid is None:
            return
        with contextlib.suppress(OSError):
            if self.pid > 1 and os.getpgid(self.pid) == self.pid != os.getpgrp():
                os.killpg(self.pid, signum)
                return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def _wait(self, timeout_s: float) -> bool:
        if self.proc is None:
            return self.exit_cause() is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout_s)
        return self.proc.poll() is not None

    def stop(self, *, ask: bool) -> None:
        """Ask, then SIGTERM, then SIGKILL the kernel's group; then every leftover descendant."""
        budget = CLOSE_BUDGET_S / 2
        strays = _descendants(self.pid) if self.pid and self.exit_cause() is None else []
        if ask and self.exit_cause() is None:
            with contextlib.suppress(Exception):
                self.km.request_shutdown()
            self._wait(budget)
        if self.exit_cause() is None:
            self._signal_group(signal.SIGTERM)
            self._wait(budget)
        # Kill the group even when the kernel is gone: daemon children of user code live there.
        with contextlib.suppress(OSError):
            if self.pid and self.pid > 1 and self.pid != os.getpgrp():
                os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        for pid in strays:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._wait(budget)
        self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.cleanup_resources()


class JupyterSession:
    """A live kernel whose cwd is the workspace; a lost kernel is replaced on the same one."""

    def __init__(
        self,
        kernel_name: str,
        *,
        workspace: Path | None,
        timeout_s: float,
        max_output_chars: int,
        interrupt_grace_s: float,
    ) -> None:
        self.id = uuid.uuid4().hex
        self._ws = Workspace(workspace)
        self.workspace = self._ws.path
        self._kernel_name = kernel_name
        self._timeout_s = timeout_s
        self._max_chars = max_output_chars
        self._grace_s = interrupt_grace_s
        self._rundir = Path(tempfile.mkdtemp(prefix="codeinterp-jk-"))  # short: socket paths
        self._busy = threading.Lock()  # held by whoever drives the kernel's sockets
        self._state = SessionState.STARTING
        self._closed = False
        self._stop_reason: str | None = None  # set by close()/restart() to end a running cell
        self._kernel: _Kernel | None = None
        with self._busy:
            try:
                self._kernel = self._start()
            except BaseException:
                self._closed = True
                shutil.rmtree(self._rundir, ignore_errors=True)
                self._ws.cleanup()
                raise

    @property
    def state(self) -> SessionState:
        return SessionState.CLOSED if self._closed else self._state

    @property
    def kernel_pid(self) -> int | None:
        """The current kernel's process id (None between a loss and the next execute)."""
        return None if self._kernel is None else self._kernel.pid

    def _start(self) -> _Kernel:
        self._state = SessionState.STARTING
        try:
            kernel = _Kernel(self._kernel_name, self.workspace, self._rundir)
        except SessionStartError:
            raise
        except Exception as exc:
            self._state = SessionState.DEAD
            raise SessionStartError(
                f"Could not start the Jupyter kernel {self._kernel_name!r}: {exc}. "
                "Check that it runs with `jupyter console --kernel NAME`."
            ) from exc
        try:
            kernel.wait_ready(START_TIMEOUT_S)
        except BaseException:
            kernel.stop(ask=False)
            self._state = SessionState.DEAD
            raise
        self._state = SessionState.IDLE
        return kernel

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        """Run one cell; errors in `code`, timeouts and kernel deaths come back as data."""
        if self._closed:
            raise SessionClosed()
        if not self._busy.acquire(blocking=False):
            raise SessionBusy()
        try:
            if self._closed:
                raise SessionClosed()
            if self._kernel is None:
                self._kernel = self._start()
            self._state = SessionState.BUSY
            collector = OutputCollector(max_chars=self._max_chars, on_output=on_output)
            limit = self._timeout_s if timeout_s is None else timeout_s
            return self._run(self._kernel, code, limit, collector)
        finally:
            if self._state is SessionState.BUSY:
                self._state = SessionState.IDLE
            self._busy.release()

    def _run(self, kernel: _Kernel, code: str, limit: float, out: OutputCollector) -> Execution:
        msg_id = kernel.kc.execute(code, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + limit
        interrupted = False
        error: Error | None = None
        count: int | None = None
        idle = replied = False
        while not (idle and replied):
            now = time.monotonic()
            if self._stop_reason is not None:
                return self._lose(kernel, out, error, self._stop_reason, timed_out=False)
            if now >= deadline and not interrupted:
                kernel.interrupt()
                interrupted, deadline = True, now + self._grace_s
            elif now >= deadline:
                lost = "timeout: the kernel ignored the interrupt and was killed"
                return self._lose(kernel, out, error, lost, timed_out=True)
            msgs = kernel.receive(min(POLL_S, deadline - now))
            for channel, msg in msgs:
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue  # an earlier request's leftovers
                if channel == "shell" and msg["msg_type"] == "execute_reply":
                    replied, count = True, msg["content"].get("execution_count")
                elif channel == "iopub":
                    idle = idle or self._handle(msg, out) == "idle"
                    if msg["msg_type"] == "error":
                        error = self._error(msg["content"])
            if not msgs and (cause := kernel.exit_cause()) is not None:
                return self._lose(kernel, out, error, cause, timed_out=interrupted)
        return out.finish(error=error, execution_count=count, timed_out=interrupted)

    @staticmethod
    def _handle(msg: Message, out: OutputCollector) -> str | None:
        """Feed one iopub message to the collector; returns the kernel status if it is one."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status":
            return str(content.get("execution_state"))
        if kind == "stream":
            out.stream("stderr" if content.get("name") == "stderr" else "stdout", content["text"])
        elif kind in ("display_data", "update_display_data", "execute_result"):
            data = decode_bundle(content.get("data") or {})
            meta = dict(content.get("metadata") or {})
            out.display(Display(data, meta, is_result=kind == "execute_result"))
        return None

    @staticmethod
    def _error(content: Message) -> Error:
        return Error(
            _strip_ansi(str(content.get("ename", ""))),
            _strip_ansi(str(content.get("evalue", ""))),
            _clean_traceback([str(line) for line in content.get("traceback") or []]),
        )

    def _lose(
        self, kernel: _Kernel, out: OutputCollector, error: Error | None, lost: str, timed_out: bool
    ) -> Execution:
        """Kill what is left of the kernel; the next execute starts a fresh one."""
        kernel.stop(ask=False)
        self._kernel = None
        self._state = SessionState.DEAD
        return out.finish(error=error, timed_out=timed_out, lost=lost)

    def interrupt(self) -> None:
        """Send the running cell a KeyboardInterrupt; safe from any thread."""
        kernel = self._kernel
        if self._state is SessionState.BUSY and kernel is not None:
            kernel.interrupt()

    def restart(self) -> None:
        """Fresh kernel, same workspace. A running cell is ended (its Execution says so)."""
        if self._closed:
            raise SessionClosed(action="restart the session")
        self._stop_reason = "restarted: the session was reset during this cell"
        with self._busy:  # a running cell sees _stop_reason and returns within POLL_S
            self._stop_reason = None
            if self._closed:
                raise SessionClosed(action="restart the session")
            if self._kernel is not None:
                self._kernel.stop(ask=False)
                self._kernel = None
            self._kernel = self._start()

    def close(self) -> None:
        """Stop the kernel and every process it started; remove owned directories. Idempotent."""
        if self._closed:
            return
        self._stop_reason = "session closed"
        with self._busy:
            if self._closed:
                return
            self._closed = True
            if self._kernel is not None:
                self._kernel.stop(ask=True)
                self._kernel = None
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._ws.cleanup()

    def __enter__(self) -> JupyterSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JupyterExecutor:
    """Opens sessions on a named Jupyter kernel; closing it closes every session it opened."""

    name = "jupyter"
    capabilities = Capabilities(stateful=True, can_kill=True, separate_process=True, isolated=False)

    def __init__(
        self,
        kernel_name: str = "python3",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        interrupt_grace_s: float = DEFAULT_INTERRUPT_GRACE_S,
    ) -> None:
        try:
            from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
        except ImportError as exc:
            raise DependencyMissing("jupyter_client", "jupyter", "the jupyter executor") from exc
        specs = KernelSpecManager()
        try:
            specs.get_kernel_spec(kernel_name)
        except NoSuchKernel as exc:
            names = ", ".join(sorted(specs.find_kernel_specs())) or "none"
            raise ConfigError(
                f"No Jupyter kernel named {kernel_name!r} (installed: {names}). Install one, "
                "e.g. `python -m ipykernel install --user`, or pass one of those names."
            ) from exc
        self.kernel_name = kernel_name
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.interrupt_grace_s = interrupt_grace_s
        self._sessions: weakref.WeakSet[JupyterSession] = weakref.WeakSet()
        self._closed = False

    def open(self, *, workspace: Path | None = None) -> JupyterSession:
        if self._closed:
            raise SessionClosed("executor", "open a session")
        session = JupyterSession(
            self.kernel_name,
            workspace=workspace,
            timeout_s=self.timeout_s,
            max_output_chars=self.max_output_chars,
            interrupt_grace_s=self.interrupt_grace_s,
        )
        self._sessions.add(session)
        return session

    def close(self) -> None:
        self._closed = True
        for session in list(self._sessions):
            session.close()

    def __enter__(self) -> JupyterExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
