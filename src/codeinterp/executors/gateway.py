"""The `gateway` backend: kernels on a Jupyter Kernel Gateway or Enterprise Gateway.

Sessions use the gateway's REST API (`POST /api/kernels`, `.../interrupt`, `.../restart`,
`DELETE`) and its WebSocket (`/api/kernels/{id}/channels`); messages are routed by parent
`msg_id`, and the `jupyter` backend's output mapping and Python set-up are reused.

Unlike local kernels: files live on the gateway's side, each session in its own directory
there (`session.workspace` is that path; `Capabilities.local_workspace=False`). A death is seen
by the gateway's restarter, polling every `KernelRestarter.time_to_dead` (3 s): it sends a
`restarting` status and restarts the kernel, or `dead` if it gives up, never the exit code
(`reports_exit_cause=False`). The websocket stays open through that and through a `DELETE`, so
a silent cell also looks the kernel up with `GET`. The gateway drops iopub output above 1 MB/s
unless run with `--ZMQChannelsWebsocketConnection.limit_rate=False` (codeinterp caps output).
"""

from __future__ import annotations

import ast
import contextlib
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp import errors
from codeinterp.executors import base
from codeinterp.executors.base import Capabilities, OnOutput, SessionState, SessionTracker
from codeinterp.executors.collect import OutputCollector
from codeinterp.executors.kernel_conversation import collect_output, kernel_error
from codeinterp.executors.python_kernel_setup import INLINE_BACKEND, PY_SETUP
from codeinterp.outputs import Error, Execution

TOKEN_ENV = "CODEINTERP_GATEWAY_TOKEN"
POLL_S = 0.1
PROBE_S = 2.0  # a cell silent this long: is the kernel still on the gateway?
START_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0
CLEANUP_TIMEOUT_S = 2.0
GONE = "the gateway no longer has the kernel (shut down, culled or not restartable)"
# Status messages the gateway itself sends (no parent): the kernel's state is gone.
_LOST_STATES = {
    "restarting": "the kernel died; the gateway restarted it (a gateway does not report the "
    "exit code or signal) and the session's state is lost",
    "dead": GONE,
    "starting": "the kernel was restarted outside this session; its state is lost",
}
# Run in each new Python kernel: into the session's directory (made there if missing), and
# plots back as image/png whatever MPLBACKEND the gateway's environment has.
_CD = """def _codeinterp_cd(path):
    import os, tempfile
    os.environ["MPLBACKEND"] = {backend!r}
    path = path or tempfile.mkdtemp(prefix="codeinterp-ws-")
    os.makedirs(path, exist_ok=True)
    os.chdir(path)
_codeinterp_cd({path!r})
del _codeinterp_cd
"""


class _KernelGone(Exception):
    """The gateway no longer has the kernel."""


class GatewaySession:
    """A kernel on the gateway, run in its own directory there; a lost kernel is replaced."""

    def __init__(self, executor: GatewayExecutor, workspace: Path | None) -> None:
        self.id = uuid.uuid4().hex
        self._ex = executor
        self._owned = workspace is None  # a directory the kernel made: removed on close
        self._path = None if workspace is None else str(workspace)
        self.workspace = Path(self._path or ".")  # the gateway-side path, once known
        self.kernel_id: str | None = None
        self._ws: Any = None
        self._reader = threading.Thread()  # reads the websocket into _queue
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ready = False  # the kernel answered and was set up
        self._reply: dict[str, Any] = {}  # the last execute_reply's content
        self._busy = threading.Lock()  # held by whoever drives the websocket
        self._closed = False
        self._stop_reason: str | None = None  # set by close()/restart() to end a running cell
        self._state = SessionState.STARTING
        try:
            with self._busy:
                self._ensure()
        except BaseException:
            self.close()
            raise

    @property
    def state(self) -> SessionState:
        return SessionState.CLOSED if self._closed else self._state

    def _ensure(self) -> None:
        """A kernel that answered and is set up; one the gateway lost is replaced, once."""
        self._state = SessionState.STARTING
        for attempt in (1, 2):
            try:
                if self.kernel_id is None:
                    env = self._ex.kernel_env
                    body = {"name": self._ex.kernel_name, **({"env": env} if env else {})}
                    self.kernel_id = str(self._ex.http("POST", "/api/kernels", body)["id"])
                if self._ws is not None and not self._reader.is_alive():
                    self._disconnect()  # the connection ended; the kernel may live on
                if self._ws is None:
                    self._connect()
                if not self._ready:
                    self._prepare()
                self._state = SessionState.IDLE
                return
            except _KernelGone:
                self._drop_kernel()
                if attempt == 2:
                    self._state = SessionState.DEAD
                    raise errors.SessionStartError(
                        f"The gateway at {self._ex.url} lost two new kernels in a row; see its log."
                    ) from None
            except Exception as exc:
                self._state = SessionState.DEAD
                if isinstance(exc, errors.CodeinterpError):
                    raise
                raise errors.SessionStartError(  # the websocket library's errors
                    f"Could not reach a kernel on the gateway at {self._ex.url}: {exc}"
                ) from exc

    def _connect(self) -> None:
        import websocket

        url = f"{self._ex.ws_url}/api/kernels/{self.kernel_id}/channels?session_id={self.id}"
        try:
            ws = websocket.create_connection(
                url,
                header=self._ex.headers(),
                timeout=HTTP_TIMEOUT_S,
                skip_utf8_validation=True,  # its pure-Python check took 190 ms per MB
            )
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code == 404:
                raise _KernelGone() from exc
            raise
        ws.settimeout(None)
        self._ws, self._queue = ws, queue.Queue()
        self._reader = threading.Thread(target=_read, args=(ws, self._queue), daemon=True)
        self._reader.start()

    def _disconnect(self) -> None:
        ws, self._ws, self._ready = self._ws, None, False
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()  # wakes the reader, which then ends
                ws.shutdown()

    def _drop_kernel(self) -> None:
        """Forget the kernel, asking the gateway to shut it down if it still has it."""
        self._disconnect()
        kernel_id, self.kernel_id = self.kernel_id, None
        if kernel_id is not None:
            with contextlib.suppress(Exception):
                self._ex.http("DELETE", f"/api/kernels/{kernel_id}")

    def _send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg_id, date = uuid.uuid4().hex, datetime.now(UTC).isoformat()
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": self.id, "date": date}
        header |= {"username": "codeinterp", "version": "5.3"}
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        self._ws.send(json.dumps({**msg, "channel": "shell", "buffers": []}))
        return msg_id

    def _receive(self, timeout_s: float) -> list[dict[str, Any]] | None:
        """Messages that arrived, after waiting at most `timeout_s` for one; None: disconnected."""
        msgs: list[dict[str, Any] | None] = []
        with contextlib.suppress(queue.Empty):
            msgs.append(self._queue.get(timeout=max(0.0, timeout_s)))
            while True:
                msgs.append(self._queue.get_nowait())
        if None in msgs:
            self._queue.put(None)  # stays disconnected for whoever asks next
            return None
        return [m for m in msgs if m is not None]

    def _prepare(self) -> None:
        """Handshake (a kernel_info reply *and* its iopub status), then the kernel's set-up."""
        deadline, sent_at, seen = time.monotonic() + START_TIMEOUT_S, 0.0, dict[str, set[str]]()
        while not any({"kernel_info_reply", "status"} <= kinds for kinds in seen.values()):
            if (now := time.monotonic()) > deadline:
                raise errors.SessionStartError(
                    f"The kernel on the gateway at {self._ex.url} did not answer within "
                    f"{START_TIMEOUT_S:g} s; see the gateway's log."
                )
            if now - sent_at > 1.0:  # a restarting kernel misses requests: ask again
                if seen:  # still no answer: does the gateway have the kernel at all?
                    self._ex.http("GET", f"/api/kernels/{self.kernel_id}")  # 404: _KernelGone
                seen[self._send("kernel_info_request", {})], sent_at = set(), now
            msgs = self._receive(POLL_S)
            if msgs is None or any(_lost(m) == GONE for m in msgs):
                raise _KernelGone()
            for msg in msgs:
                seen.get(msg["parent_header"].get("msg_id", ""), set()).add(msg["msg_type"])
        if self._ex.language == "python":
            code = _CD.format(path=self._path, backend=INLINE_BACKEND) + PY_SETUP
            setup = self._run(code, START_TIMEOUT_S, OutputCollector(), silent=True)
            cwd = self._reply.get("user_expressions", {}).get("cwd", {})
            if not setup.ok or cwd.get("status") != "ok":
                why = setup.lost or setup.error or cwd
                raise errors.SessionStartError(f"The kernel's set-up failed: {why}")
            self._path = str(ast.literal_eval(cwd["data"]["text/plain"]))
            self.workspace = Path(self._path)
        self._ready = True

    def execute(
        self, code: str, *, timeout_s: float | None = None, on_output: OnOutput | None = None
    ) -> Execution:
        """Run one cell; errors in `code`, timeouts and kernel deaths come back as data."""
        if not self._busy.acquire(blocking=False):
            raise errors.SessionBusy()
        try:
            if self._closed:
                raise errors.SessionClosed()
            self._ensure()
            self._state = SessionState.BUSY
            out = OutputCollector(max_chars=self._ex.max_output_chars, on_output=on_output)
            for msg in self._receive(0) or []:  # it died while idle: the cell is not sent
                if (why := _lost(msg)) is not None:
                    return self._lose(out, None, why, timed_out=False, drop=why == GONE)
            limit = self._ex.timeout_s if timeout_s is None else timeout_s
            return self._run(code, limit, out)
        finally:
            if self._state is SessionState.BUSY:
                self._state = SessionState.IDLE
            self._busy.release()

    def _run(
        self, code: str, limit: float, out: OutputCollector, silent: bool = False
    ) -> Execution:
        """Wait for this request's idle status and reply; interrupt, then restart, at the limit.

        `silent`: set-up or clean-up, which also asks for the kernel's cwd and never escalates.
        """
        cwd = {"cwd": "__import__('os').getcwd()"} if silent else {}
        content = {"code": code, "silent": silent, "store_history": not silent}
        content |= {"user_expressions": cwd, "allow_stdin": False, "stop_on_error": False}
        try:
            msg_id = self._send("execute_request", content)
        except Exception:  # the websocket library's or the socket's
            return self._lose(out, None, "the connection to the gateway was lost", timed_out=False)
        deadline, interrupted = time.monotonic() + limit, False
        probed_at = time.monotonic()
        error: Error | None = None
        count: int | None = None
        idle = replied = False
        while not (idle and replied):
            now = time.monotonic()
            if self._stop_reason is not None:
                return self._lose(out, error, self._stop_reason, timed_out=False)
            if now >= deadline and not interrupted:
                self._post("interrupt")
                deadline, interrupted = now + self._ex.interrupt_grace_s, True
            elif now >= deadline:
                if silent:
                    return self._lose(out, error, "timeout", timed_out=True)
                self._post("restart")
                lost = "timeout: the kernel ignored the interrupt; the gateway restarted it"
                return self._lose(out, error, lost, timed_out=True)
            elif now - probed_at > PROBE_S:
                probed_at = now
                try:
                    self._ex.http("GET", f"/api/kernels/{self.kernel_id}")
                except _KernelGone:
                    return self._lose(out, error, GONE, timed_out=interrupted, drop=True)
                except errors.CodeinterpError:
                    pass  # unreachable for now: the websocket will tell
            msgs = self._receive(min(POLL_S, deadline - now))
            if msgs is None:
                lost = "the connection to the gateway was lost during the cell"
                return self._lose(out, error, lost, timed_out=interrupted)
            for msg in msgs:
                if (why := _lost(msg)) is not None:
                    return self._lose(out, error, why, timed_out=interrupted, drop=why == GONE)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue  # an earlier request's leftovers, e.g. of a timed-out cell
                kind, body = msg["msg_type"], msg["content"]
                probed_at = now  # the kernel is alive
                if kind == "execute_reply":
                    replied, count, self._reply = True, body.get("execution_count"), body
                elif kind == "status":
                    idle = idle or body.get("execution_state") == "idle"
                elif kind == "error":
                    error = kernel_error(body)
                else:
                    collect_output(kind, body, out)
        return out.finish(error=error, execution_count=count, timed_out=interrupted)

    def _lose(
        self,
        out: OutputCollector,
        error: Error | None,
        lost: str,
        timed_out: bool,
        drop: bool = False,
    ) -> Execution:
        """The kernel's state is gone: set it up again (or replace it) before the next cell."""
        pending = self._receive(0)  # this kernel's leftovers: for no later cell
        if pending is None:
            self._disconnect()
        elif drop or any(_lost(m) == GONE for m in pending):
            self._drop_kernel()
        self._ready = False
        self._state = SessionState.DEAD
        return out.finish(error=error, timed_out=timed_out, lost=lost)

    def _post(self, action: str) -> bool:
        """`POST /api/kernels/{id}/{action}`; False if that failed."""
        try:
            self._ex.http("POST", f"/api/kernels/{self.kernel_id}/{action}")
        except Exception:
            return False
        return True

    def interrupt(self) -> None:
        """Send the running cell a KeyboardInterrupt; safe from any thread."""
        if self._state is SessionState.BUSY:
            self._post("interrupt")

    def restart(self) -> None:
        """Fresh kernel state, same gateway-side directory. A running cell is ended."""
        if self._closed:
            raise errors.SessionClosed(action="restart the session")
        self._stop_reason = "restarted: the session was reset during this cell"
        with self._busy:  # a running cell sees _stop_reason and returns within POLL_S
            self._stop_reason = None
            if self._closed:
                raise errors.SessionClosed(action="restart the session")
            if self.kernel_id is not None and not self._post("restart"):
                self._drop_kernel()
            self._ready = False
            self._ensure()

    def close(self) -> None:
        """Shut the kernel down on the gateway, removing its own directory there. Idempotent."""
        if self._closed:
            return
        self._stop_reason = "session closed"
        with self._busy:
            if self._closed:
                return
            self._closed, self._stop_reason = True, None
            if self._owned and self._ready and self._path:
                code = f"__import__('shutil').rmtree({self._path!r}, ignore_errors=True)"
                with contextlib.suppress(Exception):
                    self._run(code, CLEANUP_TIMEOUT_S, OutputCollector(), silent=True)
            self._drop_kernel()

    def __enter__(self) -> GatewaySession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read(ws: Any, into: queue.Queue[dict[str, Any] | None]) -> None:
    """Queue each JSON message from the websocket (answering pings), then None when it ends.

    The gateway (tornado) leaves Nagle on, so its small frames wait for our ACK, which Linux
    delays by 40 ms: a trivial cell took 48 ms instead of 5. Hence quick ACKs.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    try:
        while True:
            frame = ws.recv()
            if quickack is not None:
                ws.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            if isinstance(frame, str) and frame:  # binary frames carry buffers (widgets): unused
                into.put(json.loads(frame))
    except Exception:
        pass
    finally:
        into.put(None)


def _lost(msg: dict[str, Any]) -> str | None:
    """Why the kernel's state is gone, if `msg` is the gateway saying so."""
    if msg["msg_type"] != "status" or msg["parent_header"].get("msg_id"):
        return None
    return _LOST_STATES.get(str(msg["content"].get("execution_state")))


class GatewayExecutor(SessionTracker):
    """Opens sessions on kernels of a Jupyter (Enterprise) Gateway at `url`.

    `token`: the gateway's `KG_AUTH_TOKEN` (the CLI reads it from $CODEINTERP_GATEWAY_TOKEN).
    `kernel_env`: sent with each kernel start; gateways keep `KERNEL_*` variables (Enterprise
    Gateway reads `KERNEL_CPUS`, `KERNEL_MEMORY_LIMIT`, `KERNEL_NAMESPACE`... into the kernel's
    pod) and those they allow. Kernel Gateway then starts the kernel with only those and `PATH`.
    """

    name = "gateway"
    # Stateful, and can kill: the gateway restarts a kernel that ignores the interrupt. Not
    # isolated: what confines the gateway's kernels is the gateway's business.
    capabilities = Capabilities(isolated=False, local_workspace=False, reports_exit_cause=False)

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        kernel_name: str = "python3",
        kernel_env: dict[str, str] | None = None,
        timeout_s: float = base.DEFAULT_TIMEOUT_S,
        max_output_chars: int = base.DEFAULT_MAX_OUTPUT_CHARS,
        interrupt_grace_s: float = base.DEFAULT_INTERRUPT_GRACE_S,
    ) -> None:
        try:
            import websocket  # noqa: F401
        except ImportError as exc:
            raise errors.DependencyMissing("websocket-client", "gateway", "this executor") from exc
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(f"The gateway URL must start with http(s)://, not {url!r}.")
        self.url = url.rstrip("/")
        self.ws_url = "ws" + self.url.removeprefix("http")
        self.token = token
        self.kernel_name, self.kernel_env, self.timeout_s = kernel_name, kernel_env, timeout_s
        self.max_output_chars, self.interrupt_grace_s = max_output_chars, interrupt_grace_s
        try:
            specs = self.http("GET", "/api/kernelspecs")["kernelspecs"]
        except errors.SessionError as exc:
            raise errors.ConfigError(
                f"{exc} Check --gateway-url, and pass the gateway's token (its KG_AUTH_TOKEN) "
                f"as token= (on the command line: ${TOKEN_ENV})."
            ) from exc
        if kernel_name not in specs:
            raise errors.ConfigError(
                f"The gateway at {self.url} has no kernel named {kernel_name!r} "
                f"(it has: {', '.join(sorted(specs)) or 'none'})."
            )
        self.language = str(specs[kernel_name].get("spec", {}).get("language", "")).lower()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One REST call and its JSON answer (None if empty); a 404 on a kernel: _KernelGone."""
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers(), "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path.startswith("/api/kernels/"):
                raise _KernelGone() from exc
            detail = exc.read()[:300].decode(errors="replace")
            raise errors.SessionError(
                f"The gateway at {self.url} answered {method} {path} with HTTP {exc.code} "
                f"{exc.reason}: {detail}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise errors.SessionError(f"Cannot reach the gateway at {self.url} ({exc}).") from exc
        return json.loads(raw) if raw else None

    def open(self, *, workspace: Path | None = None) -> GatewaySession:
        """A session on a new kernel. `workspace` is a directory on the gateway's side."""
        self._ensure_open()
        if workspace is not None and self.language != "python":
            raise errors.ConfigError(
                f"A workspace can only be set for Python kernels, not {self.kernel_name!r}."
            )
        session = GatewaySession(self, workspace)
        self._track(session)
        return session
