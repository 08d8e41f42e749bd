"""The host side of the worker protocol: start a worker process, run cells, stop it for good.

A `WorkerProcess` is one `python -m codeinterp.worker` child in its own process group, talking
over two pipes that user code's children do not inherit. Running a cell waits on the response
pipe with a deadline; on timeout it interrupts (SIGINT), and if the cell has not stopped within
the grace period it kills the whole process group. End of file on the pipe means the worker
died; its exit status becomes the reported cause.
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


class WorkerProcess:
    """One worker interpreter serving cells for one workspace."""

    def __init__(self, workspace: Path, *, env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        req_read, self._req_write = os.pipe()
        self._resp_read, resp_write = os.pipe()
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
        self._frames = protocol.FrameBuffer()
        self._pending: list[dict[str, object]] = []
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            frames = self._read(deadline - time.monotonic())
            if frames is None or time.monotonic() > deadline:
                detail = self._startup_stderr()
                self.kill()
                raise SessionStartError(
                    "The worker interpreter did not start"
                    + (f": {detail}" if detail else " in time")
                    + ". Check that codeinterp is installed in the same Python "
                    f"({sys.executable})."
                )
            if any(f.get("type") == "ready" for f in frames):
                assert self.process.stderr is not None
                self.process.stderr.close()  # the worker has moved its fd 2 to its own pipe
                return

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

    def _read(self, timeout_s: float) -> list[dict[str, object]] | None:
        """Frames that arrive within `timeout_s` ([] if none); None at end of file."""
        if self._pending:
            frames, self._pending = self._pending, []
            return frames
        ready, _, _ = select.select([self._resp_read], [], [], max(0.0, timeout_s))
        if not ready:
            return []
        data = os.read(self._resp_read, 1 << 20)
        if not data:
            return None
        return self._frames.feed(data)

    def run(
        self,
        request: dict[str, object],
        collector: OutputCollector,
        *,
        timeout_s: float,
        interrupt_grace_s: float,
    ) -> Execution:
        """Send one execute request and gather its outputs until done, timeout or death."""
        request_id = next(_request_ids)
        try:
            protocol.write_all(self._req_write, protocol.encode({**request, "id": request_id}))
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
            frames = self._read(remaining)
            if frames is None:
                return self._lost(collector, timed_out=timed_out)
            for frame in frames:
                if frame.get("id") != request_id:
                    continue  # a stale frame from an earlier, abandoned request
                kind = frame.get("type")
                if kind == "done":
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
        """The worker died: reap it (and its group) and report why."""
        try:
            returncode = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            returncode = None
        self.kill()
        return collector.finish(timed_out=timed_out, lost=describe_exit(returncode))

    def interrupt(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Kill the worker and every process in its group, then reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        self._close_fds()

    def close(self, timeout_s: float = 1.0) -> None:
        """Ask the worker to leave; if it does not within `timeout_s`, kill it."""
        try:
            protocol.write_all(self._req_write, protocol.encode({"op": "shutdown"}))
            self.process.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()  # also reaps any process the user's code left in the group

    def _close_fds(self) -> None:
        for fd in (self._req_write, self._resp_read):
            try:
                os.close(fd)
            except OSError:
                pass
        self._req_write = self._resp_read = -1
