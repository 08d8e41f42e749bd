"""The `jupyter` backend: any Jupyter kernel (Python, R, Julia, bash...) through jupyter_client.

It fixes what stock Jupyter usage got wrong (SANDBOX-NOTES.md): the `ipc` transport in a private
directory (concurrent starts never race for TCP ports); messages routed by parent `msg_id` (a
timed-out cell never leaks into the next); death noticed within `POLL_S`, not at the timeout;
and stopping a kernel kills its process group, so no child of user code outlives the session.
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
from pathlib import Path
from typing import Any

from codeinterp import errors
from codeinterp.executors import base
from codeinterp.executors.base import (
    Capabilities,
    OnOutput,
    SessionState,
    SessionTracker,
    Workspace,
    describe_exit,
)
from codeinterp.executors.collect import OutputCollector
from codeinterp.outputs import Display, Error, Execution, decode_bundle

POLL_S = 0.1  # a silent kernel is checked for death this often
START_TIMEOUT_S = 60.0
CLOSE_BUDGET_S = 2.0  # ask, then SIGTERM, then SIGKILL, within this
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# -s -P: no user site-packages, and no module planted in the workspace (the cwd) runs at start.
PYTHON_KERNEL_ARGS = ["-s", "-P", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

# Run silently in each new Python kernel. ipykernel buffers stdout and stderr apart (their order
# was lost): flush the other stream before writing to one; `write` is a property as IPython
# re-patches it per cell. Add `.buffer`. Output written to fd 1/2 as a cell ends came after its
# reply: after each cell, send a mark down each fd's pipe and wait for ipykernel's reader.
PY_SETUP = """
def _codeinterp_setup():
    import fcntl, io, os, sys, termios, threading, time
    if (OutStream := type(sys.stdout)).__name__ != "OutStream": return  # not ipykernel
    class Bytes(io.RawIOBase):
        def __init__(self, text): self.text = text
        def writable(self): return True
        def write(self, b): self.text.write(bytes(b).decode(errors="replace")); return len(b)
    last, mark = [], "\\x00codeinterp-sync\\x00"
    class OrderedOutStream(OutStream):
        def _ordered_write(self, text):
            marked, text = mark in text, text.replace(mark, "")
            if text:
                if last and last[0] is not self: last[0].flush()
                last[:] = [self]
                OutStream.write(self, text)
            if marked: self.synced.set()
            return len(text)
        def _set_write(self, fn):
            plain = getattr(fn, "__func__", None) is OutStream.write
            self.__dict__["_patched_write"] = None if plain else fn
        write = property(lambda s: s.__dict__.get("_patched_write") or s._ordered_write, _set_write)
    streams = [s for s in (sys.stdout, sys.stderr) if type(s) is OutStream]
    watched = [s for s in streams if getattr(s, "watch_fd_thread", None) is not None]
    for stream in streams:
        stream.__dict__.pop("write", None)
        stream.__class__, stream.buffer = OrderedOutStream, Bytes(stream)
        stream.synced = threading.Event()
    for stream in watched:  # stop echoing fd output to the kernel's log file
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream._original_stdstream_copy)
    def piped(s):  # fd 1/2 still leads to the pipe and its reader is alive
        try: return os.fstat(s._original_stdstream_fd).st_ino == os.fstat(s._fid).st_ino
        except OSError: return False
    def sync_fd_output(*args):  # drain each pipe first, so its mark is read in one piece
        live = [s for s in watched if s.watch_fd_thread.is_alive() and piped(s)]
        for stream in live:
            for _ in range(100):
                if fcntl.ioctl(stream._fid, termios.FIONREAD, bytes(4)) == bytes(4): break
                time.sleep(0.001)
            stream.synced.clear()
            os.write(stream._original_stdstream_fd, mark.encode())
        for stream in live:
            stream.synced.wait(0.5)
    get_ipython().events.register("post_execute", sync_fd_output)
_codeinterp_setup()
del _codeinterp_setup
"""


def kernel_error(content: dict[str, Any]) -> Error:
    """ANSI codes stripped and IPython's `-----` ruler dropped: ename/evalue plus frames."""
    ename, evalue = (_ANSI.sub("", str(content.get(key, ""))) for key in ("ename", "evalue"))
    lines = (_ANSI.sub("", str(line)) for line in content.get("traceback") or [])
    return Error(ename, evalue, [line for line in lines if line.strip().strip("-")])


def collect_output(kind: str, content: dict[str, Any], out: OutputCollector) -> None:
    """Feed one iopub message's stream text or rich output to `out`; other kinds are ignored."""
    if kind == "stream":
        stderr = content.get("name") == "stderr"
        out.stream("stderr" if stderr else "stdout", str(content.get("text", "")))
    elif kind in ("display_data", "update_display_data", "execute_result"):
        data = decode_bundle(content.get("data") or {})
        meta = dict(content.get("metadata") or {})
        out.display(Display(data, meta, is_result=kind == "execute_result"))


class _Kernel:
    """One kernel process and its blocking client; a lost kernel is replaced, never revived."""

    def __init__(self, kernel_name: str, workspace: Path, rundir: Path) -> None:
        import zmq
        from jupyter_client.manager import KernelManager

        name = f"kernel-{uuid.uuid4().hex[:8]}"
        self.log = rundir / f"{name}.log"
        cf = str(rundir / f"{name}.json")
        self.km: Any = KernelManager(kernel_name=kernel_name, transport="ipc", connection_file=cf)
        spec: Any = self.km.kernel_spec
        # Under pytest ipykernel would not capture fd-level output: hide that we run there.
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        self.python = spec.language.lower() == "python"
        if self.python:
            env["MPLBACKEND"] = INLINE_BACKEND  # plots come back as image/png
        if kernel_name == "python3":
            spec.argv = [sys.executable, *PYTHON_KERNEL_ARGS]
        with open(self.log, "wb") as log:
            self.km.start_kernel(cwd=str(workspace), env=env, stdout=subprocess.DEVNULL, stderr=log)
        provisioner: Any = self.km.provisioner  # the LocalProvisioner: a Popen we can watch
        self.proc: subprocess.Popen[bytes] = provisioner.process
        self.pid, self.stopped = self.proc.pid, False
        # jupyter_client starts local kernels in a session of their own; we signal that group.
        self.own_group = os.getpgid(self.pid) == self.pid != os.getpgrp()
        self.kc: Any = self.km.client()
        self.kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self._poller = zmq.Poller()
        for channel in (self.kc.iopub_channel, self.kc.shell_channel):
            self._poller.register(channel.socket, zmq.POLLIN)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for a kernel_info reply *and* its iopub status, proving iopub is subscribed."""
        deadline = time.monotonic() + timeout_s
        msg_id, kinds, replied_at = self.kc.kernel_info(), set[str](), 0.0
        while not {"kernel_info_reply", "status"} <= kinds:
            for msg in self.receive(POLL_S):
                if msg["parent_header"].get("msg_id") == msg_id:
                    kinds.add(msg["msg_type"])
                    replied_at = replied_at or time.monotonic()
            if replied_at and time.monotonic() - replied_at > 0.2 and "status" not in kinds:
                msg_id, kinds, replied_at = self.kc.kernel_info(), set[str](), 0.0  # iopub was late
            cause = self.exit_cause()
            if cause is not None or time.monotonic() > deadline:
                why = f"died while starting ({cause})" if cause else "did not answer in time"
                log = self.log.read_bytes()[-2000:].decode(errors="replace").strip()
                raise errors.SessionStartError(f"The kernel {why}. Its stderr ends with:\n{log}")

    def receive(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every message ready on iopub, then shell, after waiting at most `timeout_s` for one."""
        ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        msgs = []
        for channel in (self.kc.iopub_channel, self.kc.shell_channel):
            while channel.socket in ready and channel.msg_ready():
                msgs.append(channel.get_msg(timeout=0))
        return msgs

    def exit_cause(self) -> str | None:
        """Why the kernel process ended ("signal 11 (SIGSEGV)", "exit 3"), or None if alive."""
        return None if (code := self.proc.poll()) is None else describe_exit(code)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(OSError):
            if self.own_group:  # the group outlives its leader while user daemons are in it
                os.killpg(self.pid, signum)
            else:
                self.proc.send_signal(signum)  # a no-op once the kernel is reaped

    def _wait(self, timeout_s: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout_s)

    def stop(self, *, ask: bool) -> None:
        """Ask, then SIGTERM, then SIGKILL the kernel's process group, within CLOSE_BUDGET_S."""
        if self.stopped:
            return
        self.stopped = True
        if ask and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.km.request_shutdown()
            self._wait(CLOSE_BUDGET_S / 4)
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._wait(CLOSE_BUDGET_S / 4)
        self._signal(signal.SIGKILL)  # even when the kernel is gone: its daemons are in the group
        self._wait(CLOSE_BUDGET_S / 2)
        self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.cleanup_resources()


class JupyterSession:
    """A live kernel whose cwd is the workspace; a lost kernel is replaced on the same one."""

    def __init__(self, executor: JupyterExecutor, workspace: Path | None) -> None:
        self.id = uuid.uuid4().hex
        self._ws = Workspace(workspace)
        self.workspace = self._ws.path
        self._ex = executor  # kernel name, limits
        self._rundir = Path(tempfile.mkdtemp(prefix="codeinterp-jk-"))  # short: socket paths
        self._busy = threading.Lock()  # held by whoever drives the kernel's sockets
        self._closed = False
        self._stop_reason: str | None = None  # set by close()/restart() to end a running cell
        self._kernel: _Kernel | None = None
        try:
            self._kernel = self._start()
        except BaseException:
            self.close()
            raise

    @property
    def state(self) -> SessionState:
        return SessionState.CLOSED if self._closed else self._state

    def _start(self) -> _Kernel:
        """A fresh kernel that has answered; if none starts, the session stays DEAD."""
        self._state, name = SessionState.STARTING, self._ex.kernel_name
        kernel: _Kernel | None = None
        try:
            kernel = _Kernel(name, self.workspace, self._rundir)
            kernel.wait_ready(START_TIMEOUT_S)
            if kernel.python:
                setup = self._run(kernel, PY_SETUP, START_TIMEOUT_S, OutputCollector(), True)
                if not setup.ok:
                    raise RuntimeError(f"its set-up failed: {setup.lost or setup.error}")
        except BaseException as exc:
            self._state = SessionState.DEAD
            if kernel is not None:
                kernel.stop(ask=False)
            if isinstance(exc, errors.SessionStartError) or not isinstance(exc, Exception):
                raise
            raise errors.SessionStartError(
                f"Could not start the Jupyter kernel {name!r}: {exc}. "
                f"Check that `jupyter console --kernel {name}` works."
            ) from exc
        self._state = SessionState.IDLE
        return kernel

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        """Run one cell; errors in `code`, timeouts and kernel deaths come back as data."""
        if not self._busy.acquire(blocking=False):
            raise errors.SessionBusy()
        try:
            if self._closed:
                raise errors.SessionClosed()
            if self._kernel is None:
                self._kernel = self._start()
            self._state = SessionState.BUSY
            out = OutputCollector(max_chars=self._ex.max_output_chars, on_output=on_output)
            limit = self._ex.timeout_s if timeout_s is None else timeout_s
            return self._run(self._kernel, code, limit, out)
        finally:
            if self._state is SessionState.BUSY:
                self._state = SessionState.IDLE
            self._busy.release()

    def _run(
        self, kernel: _Kernel, code: str, limit: float, out: OutputCollector, silent: bool = False
    ) -> Execution:
        """Wait for this request's idle status and reply; interrupt, then kill, at the limit."""
        msg_id = kernel.kc.execute(code, silent, not silent, allow_stdin=False, stop_on_error=False)
        deadline, interrupted = time.monotonic() + limit, False
        error: Error | None = None
        count: int | None = None
        idle = replied = False
        while not (idle and replied):
            now = time.monotonic()
            if self._stop_reason is not None:
                return self._lose(kernel, out, error, self._stop_reason, timed_out=False)
            if now >= deadline and not interrupted:
                with contextlib.suppress(RuntimeError, OSError):
                    kernel.km.interrupt_kernel()
                deadline, interrupted = now + self._ex.interrupt_grace_s, True
            elif now >= deadline:
                lost = "timeout: the kernel ignored the interrupt and was killed"
                return self._lose(kernel, out, error, lost, timed_out=True)
            msgs = kernel.receive(min(POLL_S, deadline - now))
            for msg in msgs:
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue  # an earlier request's leftovers, e.g. of a timed-out cell
                kind, content = msg["msg_type"], msg["content"]
                if kind == "execute_reply":
                    replied, count = True, content.get("execution_count")
                elif kind == "status":
                    idle = idle or content.get("execution_state") == "idle"
                elif kind == "error":
                    error = kernel_error(content)
                else:
                    collect_output(kind, content, out)
            if not msgs and (cause := kernel.exit_cause()) is not None:
                return self._lose(kernel, out, error, cause, timed_out=interrupted)
        return out.finish(error=error, execution_count=count, timed_out=interrupted)

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
            with contextlib.suppress(RuntimeError, OSError):
                kernel.km.interrupt_kernel()

    def restart(self) -> None:
        """Fresh kernel, same workspace. A running cell is ended (its Execution says so)."""
        if self._closed:
            raise errors.SessionClosed(action="restart the session")
        self._stop_reason = "restarted: the session was reset during this cell"
        with self._busy:  # a running cell sees _stop_reason and returns within POLL_S
            self._stop_reason = None
            if self._closed:
                raise errors.SessionClosed(action="restart the session")
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
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._ws.cleanup()

    def __enter__(self) -> JupyterSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JupyterExecutor(SessionTracker):
    """Opens sessions on a named Jupyter kernel; closing it closes every session it opened."""

    name = "jupyter"
    capabilities = Capabilities(stateful=True, can_kill=True, separate_process=True, isolated=False)

    def __init__(
        self,
        kernel_name: str = "python3",
        *,
        timeout_s: float = base.DEFAULT_TIMEOUT_S,
        max_output_chars: int = base.DEFAULT_MAX_OUTPUT_CHARS,
        interrupt_grace_s: float = base.DEFAULT_INTERRUPT_GRACE_S,
    ) -> None:
        try:
            from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
        except ImportError as exc:
            raise errors.DependencyMissing("jupyter_client", "jupyter", "this executor") from exc
        specs = KernelSpecManager()
        try:
            specs.get_kernel_spec(kernel_name)
        except NoSuchKernel as exc:
            names = ", ".join(sorted(specs.find_kernel_specs())) or "none"
            raise errors.ConfigError(
                f"No Jupyter kernel named {kernel_name!r} (installed: {names}). Pass one of "
                "those, or install one, e.g. `python -m ipykernel install --user`."
            ) from exc
        self.kernel_name, self.timeout_s = kernel_name, timeout_s
        self.max_output_chars, self.interrupt_grace_s = max_output_chars, interrupt_grace_s

    def open(self, *, workspace: Path | None = None) -> JupyterSession:
        self._ensure_open()
        session = JupyterSession(self, workspace)
        self._track(session)
        return session
