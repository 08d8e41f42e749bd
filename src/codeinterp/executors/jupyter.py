"""The `jupyter` backend: any Jupyter kernel (Python, R, Julia, bash...) through jupyter_client.

It fixes what stock Jupyter usage got wrong (SANDBOX-NOTES.md): the `ipc` transport in a private
directory (concurrent starts never race for TCP ports); messages routed by parent `msg_id` (a
timed-out cell never leaks into the next: kernel_conversation.py); death noticed within `POLL_S`,
not at the timeout; and stopping a kernel kills its process group, so no child of user code
outlives the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeinterp import errors
from codeinterp.executors import base
from codeinterp.executors.base import Capabilities, SessionTracker, Workspace, describe_exit
from codeinterp.executors.collect import OutputCollector
from codeinterp.executors.kernel_conversation import KernelLost, Message
from codeinterp.executors.kernel_session import KernelSession
from codeinterp.executors.python_kernel_setup import INLINE_BACKEND, PY_SETUP

START_TIMEOUT_S = 60.0
CLOSE_BUDGET_S = 2.0  # ask, then SIGTERM, then SIGKILL, within this
# -s -P: no user site-packages, and no module planted in the workspace (the cwd) runs at start.
PYTHON_KERNEL_ARGS = ["-s", "-P", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


class _Kernel:
    """One kernel process and its blocking client: the `KernelTransport` of a local kernel."""

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

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def receive(self, timeout_s: float) -> Iterator[Message]:
        """Every message ready on iopub, then shell, after waiting at most `timeout_s` for one."""
        ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        for channel in (self.kc.iopub_channel, self.kc.shell_channel):
            while channel.socket in ready and channel.msg_ready():
                yield channel.get_msg(timeout=0)

    def interrupt(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.km.interrupt_kernel()

    def kill(self) -> str:
        self.stop(ask=False)
        return "the kernel ignored the interrupt and was killed"

    def death_cause(self, silent_s: float) -> str | None:
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


class JupyterSession(KernelSession[_Kernel]):
    """A live kernel whose cwd is the workspace; a lost kernel is replaced on the same one."""

    def __init__(self, executor: JupyterExecutor, workspace: Path | None) -> None:
        super().__init__(executor)
        self._ws = Workspace(workspace)
        self.workspace = self._ws.path
        self._kernel_name = executor.kernel_name
        self._rundir = Path(tempfile.mkdtemp(prefix="codeinterp-jk-"))  # short: socket paths
        self._open()

    def _connect(self) -> _Kernel:
        """The kernel, or a fresh one that has answered and is set up."""
        if self._kernel is not None:
            return self._kernel
        name, kernel = self._kernel_name, None
        try:
            kernel = _Kernel(name, self.workspace, self._rundir)
            conversation = self._conversation(kernel)
            try:
                conversation.handshake(START_TIMEOUT_S)
            except (KernelLost, TimeoutError) as exc:
                why = "did not answer in time"
                if isinstance(exc, KernelLost):
                    why = f"died while starting ({exc})"
                log = kernel.log.read_bytes()[-2000:].decode(errors="replace").strip()
                raise errors.SessionStartError(
                    f"The kernel {why}. Its stderr ends with:\n{log}"
                ) from None
            if kernel.python:
                setup = conversation.run(PY_SETUP, START_TIMEOUT_S, OutputCollector(), silent=True)
                if not setup.ok:
                    raise RuntimeError(f"its set-up failed: {setup.lost or setup.error}")
        except BaseException as exc:
            if kernel is not None:
                kernel.stop(ask=False)
            if isinstance(exc, errors.SessionStartError) or not isinstance(exc, Exception):
                raise
            raise errors.SessionStartError(
                f"Could not start the Jupyter kernel {name!r}: {exc}. "
                f"Check that `jupyter console --kernel {name}` works."
            ) from exc
        self._kernel = kernel
        return kernel

    def _discard_kernel(self) -> None:
        if self._kernel is not None:
            self._kernel.stop(ask=False)
            self._kernel = None

    def _shutdown(self) -> None:
        if self._kernel is not None:
            self._kernel.stop(ask=True)
        shutil.rmtree(self._rundir, ignore_errors=True)
        self._ws.cleanup()


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
