"""The worker loop: one interpreter serving cells to a host over framed pipes.

Started by the host as `python -s -P -m codeinterp.worker --in-fd N --out-fd M --workspace W`
(no user site, no cwd on sys.path, started outside the workspace so planted modules are not
imported). The host sends {"op": "execute", "id", "code"|"path"} frames; the worker answers
with output frames tagged with the request's id and a final {"type": "done"} frame.
SIGINT interrupts user code only: our own bookkeeping never sees a KeyboardInterrupt.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from codeinterp.outputs import Output, error_to_dict, output_to_dict
from codeinterp.worker import protocol
from codeinterp.worker.runner import CellRunner
from codeinterp.worker.streams import EmitStream, FdCapture, Flusher, OutputMux

MPL_BACKEND = "module://codeinterp.worker.mplbackend"  # see mplbackend.py


class Worker:
    def __init__(self, in_fd: int, out_fd: int, workspace: Path) -> None:
        self.in_fd = in_fd
        self.writer = protocol.FrameWriter(out_fd)
        self.current_id: Any = None
        self.in_user_code = False
        self.mux = OutputMux(self._send_output)
        self.stdout = EmitStream("stdout", self.mux, fd=1)
        self.stderr = EmitStream("stderr", self.mux, fd=2)
        self.captures = [FdCapture(1, self.stdout), FdCapture(2, self.stderr)]
        sys.stdout, sys.stderr = self.stdout, self.stderr
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
        sys.argv = [""]
        os.chdir(workspace)
        # The workspace goes last on sys.path: the user's modules import, stdlib ones win.
        sys.path.append(str(workspace))
        # Packages the supervisor installed for this session (see agent/packages.py).
        sys.path.append(str(workspace / ".codeinterp" / "site-packages"))
        self.runner = CellRunner(self.mux.emit)
        sys.modules["__main__"] = self.runner.module
        self.flusher = Flusher(self.mux)
        signal.signal(signal.SIGINT, self._on_sigint)
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A process forked by user code must never speak on our channel (its frames would
        interleave with ours); its output goes to fd 1/2, which we capture anyway."""
        for fd in {self.in_fd, self.writer.fd}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.writer.fd = -1
        sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115

    def _send_output(self, output: Output) -> None:
        self.writer.send({"id": self.current_id, **output_to_dict(output)})

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.in_user_code:
            raise KeyboardInterrupt

    def serve(self) -> None:
        self.writer.send({"type": "ready", "pid": os.getpid()})
        while True:
            request = protocol.read_frame(self.in_fd)
            if request is None or request.get("op") == "shutdown":
                return
            if request.get("op") == "execute":
                self.execute(request)

    def execute(self, request: dict[str, Any]) -> None:
        self.current_id = request.get("id")
        path = request.get("path")
        code = Path(path).read_text() if path else str(request.get("code", ""))
        self.in_user_code = True
        try:
            error = self.runner.run(code, filename=path)
        finally:
            self.in_user_code = False
        if os.getpid() != self.pid:  # a fork of user code fell through the cell: end it here
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1 if error else 0)
        for capture in self.captures:
            capture.drain()
        self.mux.flush()
        self.writer.send(
            {
                "id": self.current_id,
                "type": "done",
                "error": None if error is None else error_to_dict(error),
                "execution_count": self.runner.execution_count,
            }
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codeinterp-worker")
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args(argv)
    # The channel must not leak into processes the user's code starts.
    os.set_inheritable(args.in_fd, False)
    os.set_inheritable(args.out_fd, False)
    os.environ.setdefault("MPLBACKEND", MPL_BACKEND)
    Worker(args.in_fd, args.out_fd, args.workspace).serve()
