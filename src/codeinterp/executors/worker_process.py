"""The host side of the worker protocol: run cells in a worker, stop it for good.

`WorkerChannel` is the conversation with one worker wherever it runs (a plain child process
here, a sandboxed fork in sandbox/): running a cell waits on the response channel with a
deadline; on timeout it interrupts (SIGINT), and if the cell has not stopped within the grace
period it kills the worker's whole process tree. End of file on the channel means the worker
died; its exit status becomes the reported cause. Frames are routed by request id, so output
of an abandoned cell never reaches the next one.

`WorkerProcess` is one `python -m codeinterp.worker` child in its own process group, talking
over two pipes that user code's children do not inherit.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from codeinterp.errors import SessionStartError
from codeinterp.executors.base import describe_exit
from codeinterp.executors.collect import OutputCollector
from codeinterp.outputs import Execution, Stream, error_from_dict, output_from_dict
from codeinterp.worker import protocol

START_TIMEOUT_S = 30.0
_request_ids = itertools.count(1)

Frame = dict[str, object]


class WorkerChannel:
    """Framed requests to a worker and its replies; subclasses say how to signal and reap it."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._frames = protocol.FrameBuffer()
        self._pending: list[Frame] = []

    # -- what a subclass provides ---------------------------------------------------------
    @property
    def pid(self) -> int:
        """The worker's process id, as the host sees it."""
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def interrupt(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """Kill the worker and everything it started, reap it, close the channel."""
        raise NotImplementedError

    def exit_cause(self) -> str:
        """Why the worker died, once it has: "signal 11 (SIGSEGV)", "exit 3", "memory limit"."""
        raise NotImplementedError

    def close(self, timeout_s: float = 1.0) -> None:
        """Ask the worker to leave; kill it if it does not within `timeout_s`."""
        self.kill()

    # -- the conversation -----------------------------------------------------------------
    def send(self, message: Frame) -> None:
        protocol.write_all(self._write_fd, protocol.encode(message))

    def read(self, timeout_s: float) -> list[Frame] | None:
        """Frames that arrive within `timeout_s` ([] if none); None at end of file."""
        if self._pending:
            frames, self._pending = self._pending, []
            return frames
        ready, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout_s))
        if not ready:
            return []
        try:
            data = os.read(self._read_fd, 1 << 20)
        except ConnectionResetError:
            return None
        if not data:
            return None
        return self._frames.feed(data)

    def wait_for(self, *kinds: str, timeout_s: float) -> Frame | None:
        """The first frame of one of `kinds` within `timeout_s`; None on timeout or end of file."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            frames = self.read(remaining)
            if frames is None:
                return None
            for i, frame in enumerate(frames):
                if frame.get("type") in kinds:
                    self._pending = frames[i + 1 :] + self._pending
                    return frame
        return None

    def run(
        self,
        request: Frame,
        collector: OutputCollector,
        *,
        timeout_s: float,
        interrupt_grace_s: float,
    ) -> Execution:
        """Send one execute request and gather its outputs until done, timeout or death."""
        request_id = next(_request_ids)
        try:
            self.send({**request, "id": request_id})
        except OSError:
            return self._lost(collector, timed_out=False)
        deadline = time.monotonic() + timeout_s
        timed_out = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if timed_out:  # the interrupt was ignored: kill the whole tree
                    self.kill()
                    return collector.finish(
                        timed_out=True,
                        lost="timeout: the cell ignored the interrupt, so its interpreter "
                        "was killed",
                    )
                timed_out = True
                self.interrupt()
                deadline = time.monotonic() + interrupt_grace_s
                continue
            frames = self.read(remaining)
            if frames is None:
                return self._lost(collector, timed_out=timed_out)
            for frame in frames:
                if frame.get("id") != request_id:
                    continue  # a stale frame from an earlier, abandoned request
                if frame.get("type") == "done":
                    error = frame.get("error")
                    count = frame.get("execution_count")
                    return collector.finish(
                        error=error_from_dict(error) if isinstance(error, dict) else None,
                        execution_count=count if isinstance(count, int) else None,
                        timed_out=timed_out,
                    )
                output = output_from_dict(frame)
                if isinstance(output, Stream):
                    collector.stream(output.name, output.text)
                else:
                    collector.display(output)

    def _lost(self, collector: OutputCollector, *, timed_out: bool) -> Execution:
        """The worker died: reap it (and its tree) and report why."""
        cause = self.exit_cause()
        self.kill()
        return collector.finish(timed_out=timed_out, lost=cause)

    def close_channel(self) -> None:
        for fd in {self._read_fd, self._write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
        self._read_fd = self._write_fd = -1


class WorkerProcess(WorkerChannel):
    """One worker interpreter, a plain child process in its own process group."""

    def __init__(self, workspace: Path, *, env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        req_read, req_write = os.pipe()
        resp_read, resp_write = os.pipe()
        super().__init__(resp_read, req_write)
        command = [
            sys.executable, "-s", "-P", "-m", "codeinterp.worker",
            "--in-fd", str(req_read), "--out-fd", str(resp_write),
            "--workspace", str(workspace),
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(req_read, resp_write),
                # Not the workspace: a planted module there must not shadow ours at start-up.
                cwd=os.path.dirname(sys.executable),
                env=env,
                start_new_session=True,  # its own process group, killed as one
            )
        finally:
            os.close(req_read)
            os.close(resp_write)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _wait_ready(self) -> None:
        if self.wait_for("ready", timeout_s=START_TIMEOUT_S) is None:
            detail = self._startup_stderr()
            self.kill()
            raise SessionStartError(
                "The worker interpreter did not start"
                + (f": {detail}" if detail else " in time")
                + f". Check that codeinterp is installed in the same Python ({sys.executable})."
            )
        assert self.process.stderr is not None
        self.process.stderr.close()  # the worker has moved its fd 2 to its own pipe

    def _startup_stderr(self) -> str:
        stderr = self.process.stderr
        if stderr is None or stderr.closed:
            return ""
        try:
            self.process.wait(timeout=1.0)
            text = stderr.read().decode(errors="replace").strip()
        except (subprocess.TimeoutExpired, OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else ""

    def exit_cause(self) -> str:
        try:
            return describe_exit(self.process.wait(timeout=1.0))
        except subprocess.TimeoutExpired:
            return describe_exit(None)

    def interrupt(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        self.close_channel()

    def close(self, timeout_s: float = 1.0) -> None:
        """Ask the worker to leave; if it does not within `timeout_s`, kill it."""
        try:
            self.send({"op": "shutdown"})
            self.process.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()  # also ends any process the user's code left in the group
