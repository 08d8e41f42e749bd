"""The Jupyter messaging protocol, written once for every way of reaching a kernel.

The `jupyter` backend reaches a local kernel over ZMQ, the `gateway` backend a remote one over a
WebSocket; only that transport differs (`KernelTransport`). What is the same lives here: the
start-up handshake; replies and outputs found by their parent `msg_id`, so a timed-out cell's
leftovers never reach the next cell; a cell ends with its reply *and* its idle status; at the
time limit an interrupt, then the transport's `kill` if the kernel ignores it; a silent kernel
is asked after regularly, so a death is reported at once, not at the time limit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from codeinterp.executors.collect import OutputCollector
from codeinterp.outputs import Display, Error, Execution, decode_bundle

Message = dict[str, Any]

POLL_S = 0.1  # a silent kernel is checked for death, and a stop request noticed, this often
ASK_AGAIN_S = 1.0  # a kernel that has not answered kernel_info is asked again (it may restart)
IOPUB_LAG_S = 0.2  # a kernel_info reply whose iopub status is this late: ask again
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


class KernelLost(Exception):
    """The kernel, or the way to it, is gone; the message says why, for `Execution.lost`."""


class KernelTransport(Protocol):
    """How requests reach one kernel and its messages come back."""

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send a shell request; returns its msg_id. KernelLost if it cannot be sent."""
        ...

    def receive(self, timeout_s: float) -> Iterable[Message]:
        """What arrived (iopub and shell), after waiting at most `timeout_s` for a message;
        KernelLost where the messages say the kernel or the connection was lost."""
        ...

    def interrupt(self) -> None:
        """Ask the running cell to stop, as Ctrl-C would. Never raises."""
        ...

    def kill(self) -> str:
        """Stop a cell that ignored the interrupt (its kernel's state goes); says how."""
        ...

    def death_cause(self, silent_s: float) -> str | None:
        """Why the kernel is gone, or None while it seems alive; asked after a quiet poll, the
        kernel having said nothing about our request for `silent_s`."""
        ...


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


class KernelConversation:
    """Requests to one kernel and the messages that answer them.

    `stop_reason()` says why the session ends a running cell (restart, close), or None;
    `on_lost()` is told, before the cell's Execution is made, that the kernel's state is lost.
    """

    def __init__(
        self,
        transport: KernelTransport,
        *,
        interrupt_grace_s: float,
        stop_reason: Callable[[], str | None],
        on_lost: Callable[[], None],
    ) -> None:
        self.transport = transport
        self._grace_s = interrupt_grace_s
        self._stop_reason, self._on_lost = stop_reason, on_lost
        self.reply: dict[str, Any] = {}  # the last execute_reply's content

    def handshake(self, timeout_s: float) -> None:
        """Until a kernel_info reply *and* its iopub status came: the kernel answers, and our
        iopub subscription is live. Raises KernelLost, or TimeoutError after `timeout_s`."""
        heard_at = time.monotonic()
        deadline = heard_at + timeout_s
        asked: dict[str, set[str]] = {}  # msg_id: the kinds of message that answered it
        asked_at = replied_at = 0.0
        while not any({"kernel_info_reply", "status"} <= kinds for kinds in asked.values()):
            if (now := time.monotonic()) > deadline:
                raise TimeoutError(f"the kernel did not answer within {timeout_s:g} s")
            if now - asked_at > ASK_AGAIN_S or (replied_at and now - replied_at > IOPUB_LAG_S):
                asked[self.transport.send("kernel_info_request", {})] = set()
                asked_at, replied_at = now, 0.0
            quiet = True
            for msg in self.transport.receive(POLL_S):
                quiet = False
                if (kinds := asked.get(msg["parent_header"].get("msg_id", ""))) is not None:
                    kinds.add(kind := msg["msg_type"])
                    heard_at = now
                    replied_at = replied_at or (now if kind == "kernel_info_reply" else 0.0)
            if quiet and (cause := self.transport.death_cause(now - heard_at)) is not None:
                raise KernelLost(cause)

    def run(
        self,
        code: str,
        limit_s: float,
        out: OutputCollector,
        *,
        silent: bool = False,
        user_expressions: dict[str, str] | None = None,
    ) -> Execution:
        """Run `code` until its reply and idle status came; outputs go to `out`.

        At `limit_s` the cell is interrupted, and `interrupt_grace_s` later killed. Whatever
        ends the kernel's state (a death, a stop, a kill) is reported in `Execution.lost`.
        `silent`: the session's own set-up or clean-up, never killed (a failure discards it).
        """
        error: Error | None = None
        count: int | None = None
        idle = replied = interrupted = False
        try:
            for _ in self.transport.receive(0):
                pass  # earlier requests' leftovers; a loss among them: this cell is not sent
            content = {"code": code, "silent": silent, "store_history": not silent}
            content |= {"user_expressions": user_expressions or {}, "allow_stdin": False}
            msg_id = self.transport.send("execute_request", content | {"stop_on_error": False})
            heard_at = time.monotonic()
            deadline = heard_at + limit_s
            while not (idle and replied):
                now = time.monotonic()
                if (reason := self._stop_reason()) is not None:
                    interrupted = False  # the session ends the cell, not its time limit
                    raise KernelLost(reason)
                if now >= deadline and not interrupted:
                    self.transport.interrupt()
                    deadline, interrupted = now + self._grace_s, True
                elif now >= deadline:
                    raise KernelLost("timeout" if silent else f"timeout: {self.transport.kill()}")
                quiet = True
                for msg in self.transport.receive(min(POLL_S, deadline - now)):
                    quiet = False
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue  # an earlier request's leftovers, e.g. of a timed-out cell
                    kind, body = msg["msg_type"], msg["content"]
                    heard_at = now
                    if kind == "execute_reply":
                        replied, count, self.reply = True, body.get("execution_count"), body
                    elif kind == "status":
                        idle = idle or body.get("execution_state") == "idle"
                    elif kind == "error":
                        error = kernel_error(body)
                    else:
                        collect_output(kind, body, out)
                if quiet and (cause := self.transport.death_cause(now - heard_at)) is not None:
                    raise KernelLost(cause)
        except KernelLost as lost:
            self._on_lost()
            return out.finish(error=error, timed_out=interrupted, lost=str(lost))
        return out.finish(error=error, execution_count=count, timed_out=interrupted)
