"""The `gateway` backend: kernels on a Jupyter Kernel Gateway or Enterprise Gateway.

Sessions use the gateway's REST API (`POST /api/kernels`, `.../interrupt`, `.../restart`,
`DELETE`) and its WebSocket (`/api/kernels/{id}/channels`): that is the transport
(`_RemoteKernel`); the protocol is kernel_conversation.py's, as for the `jupyter` backend.

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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp import errors
from codeinterp.executors import base
from codeinterp.executors.base import Capabilities, SessionTracker
from codeinterp.executors.collect import OutputCollector
from codeinterp.executors.kernel_conversation import KernelLost, Message
from codeinterp.executors.kernel_session import KernelSession
from codeinterp.executors.python_kernel_setup import INLINE_BACKEND, PY_SETUP

TOKEN_ENV = "CODEINTERP_GATEWAY_TOKEN"
PROBE_S = 2.0  # a cell silent this long: is the kernel still on the gateway?
START_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0
CLEANUP_TIMEOUT_S = 2.0
GONE = "the gateway no longer has the kernel (shut down, culled or not restartable)"
DISCONNECTED = "the connection to the gateway was lost during the cell"
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
_CWD = {"cwd": "__import__('os').getcwd()"}  # asked with the set-up: the directory's path


class _KernelGone(Exception):
    """The gateway no longer has the kernel."""


class _RemoteKernel:
    """One kernel on the gateway, as a `KernelTransport`: REST calls about it, and its
    websocket, read by a thread into a queue."""

    def __init__(self, gateway: GatewayExecutor, kernel_id: str, session_id: str) -> None:
        self.gateway, self.id, self._session_id = gateway, kernel_id, session_id
        self.ws: Any = None
        self._reader = threading.Thread()  # reads the websocket into _queue
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self.ended = self.gone = False  # the connection ended; the gateway lost the kernel
        self.starting = True  # while set up, statuses saying it (re)starts are no loss
        self._probed_at = 0.0

    def connect(self) -> bool:
        """Open the websocket unless it is open; True if it was (re)opened."""
        import websocket

        if self.ws is not None and self._reader.is_alive():
            return False
        self.disconnect()
        url = f"{self.gateway.ws_url}/api/kernels/{self.id}/channels?session_id={self._session_id}"
        try:
            ws = websocket.create_connection(
                url,
                header=self.gateway.headers(),
                timeout=HTTP_TIMEOUT_S,
                skip_utf8_validation=True,  # its pure-Python check took 190 ms per MB
            )
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code == 404:
                raise _KernelGone() from exc
            raise
        ws.settimeout(None)
        self.ws, self._queue, self.ended, self.gone = ws, queue.Queue(), False, False
        self._reader = threading.Thread(target=_read, args=(ws, self._queue), daemon=True)
        self._reader.start()
        return True

    def disconnect(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()  # wakes the reader, which then ends
                ws.shutdown()

    def post(self, action: str) -> bool:
        """`POST /api/kernels/{id}/{action}`; False if that failed."""
        try:
            self.gateway.http("POST", f"/api/kernels/{self.id}/{action}")
        except Exception:
            return False
        return True

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg_id, date = uuid.uuid4().hex, datetime.now(UTC).isoformat()
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": self._session_id}
        header |= {"date": date, "username": "codeinterp", "version": "5.3"}
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        try:
            self.ws.send(json.dumps({**msg, "channel": "shell", "buffers": []}))
        except Exception as exc:  # the websocket library's or the socket's
            raise KernelLost("the connection to the gateway was lost") from exc
        return msg_id

    def receive(self, timeout_s: float) -> Iterator[Message]:
        """What arrived, after waiting at most `timeout_s` for a message; KernelLost at the
        end of the connection or at a status of the gateway's saying the kernel's state is
        gone."""
        msgs: list[Message | None] = []
        with contextlib.suppress(queue.Empty):
            msgs.append(self._queue.get(timeout=max(0.0, timeout_s)))
            while True:
                msgs.append(self._queue.get_nowait())
        for msg in msgs:
            if (why := self._loss(msg)) is not None:
                raise KernelLost(why)
            if msg is not None:  # (always: None is a loss)
                yield msg

    def drop_pending(self) -> None:
        """Drop the messages not received (they answer no later request), noting losses."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._loss(self._queue.get_nowait())

    def _loss(self, msg: Message | None) -> str | None:
        """Why the kernel's state is gone, if `msg` (None: the connection's end) says so."""
        if msg is None:
            self.ended = True
            return DISCONNECTED
        if msg["msg_type"] != "status" or msg["parent_header"].get("msg_id"):
            return None
        why = _LOST_STATES.get(str(msg["content"].get("execution_state")))
        self.gone = self.gone or why == GONE
        return None if self.starting and why != GONE else why

    def interrupt(self) -> None:
        self.post("interrupt")

    def kill(self) -> str:
        self.post("restart")
        return "the kernel ignored the interrupt; the gateway restarted it"

    def death_cause(self, silent_s: float) -> str | None:
        """After PROBE_S of silence, whether the gateway still has the kernel."""
        if silent_s <= PROBE_S or time.monotonic() - self._probed_at <= PROBE_S:
            return None
        self._probed_at = time.monotonic()
        try:
            self.gateway.http("GET", f"/api/kernels/{self.id}")
        except _KernelGone:
            self.gone = True
            return GONE
        except errors.CodeinterpError:
            pass  # unreachable for now: the websocket will tell
        return None


class GatewaySession(KernelSession[_RemoteKernel]):
    """A kernel on the gateway, run in its own directory there; a lost kernel is replaced."""

    def __init__(self, executor: GatewayExecutor, workspace: Path | None) -> None:
        super().__init__(executor)
        self._ex = executor
        self._owned = workspace is None  # a directory the kernel made: removed on close
        self._path = None if workspace is None else str(workspace)
        self.workspace = Path(self._path or ".")  # the gateway-side path, once known
        self._prepared = False  # the kernel answered and was set up
        self._open()

    @property
    def kernel_id(self) -> str | None:
        return None if self._kernel is None else self._kernel.id

    def _connect(self) -> _RemoteKernel:
        """A kernel that answered and is set up; one the gateway lost is replaced, once."""
        for _ in range(2):
            try:
                return self._connect_once()
            except _KernelGone:
                self._drop_kernel()
            except errors.CodeinterpError:
                raise
            except Exception as exc:  # the websocket library's errors
                raise errors.SessionStartError(
                    f"Could not reach a kernel on the gateway at {self._ex.url}: {exc}"
                ) from exc
        raise errors.SessionStartError(
            f"The gateway at {self._ex.url} lost two new kernels in a row; see its log."
        )

    def _connect_once(self) -> _RemoteKernel:
        if self._kernel is None:
            env = self._ex.kernel_env
            body = {"name": self._ex.kernel_name, **({"env": env} if env else {})}
            kernel_id = str(self._ex.http("POST", "/api/kernels", body)["id"])
            self._kernel = _RemoteKernel(self._ex, kernel_id, self.id)
        kernel = self._kernel
        if kernel.connect():  # a new kernel, or the connection ended (the kernel may live on)
            self._prepared = False
        if not self._prepared:
            self._prepare(kernel)
        return kernel

    def _prepare(self, kernel: _RemoteKernel) -> None:
        """Handshake, then the set-up: into the session's directory, and learn its path."""
        conversation = self._conversation(kernel)
        kernel.starting = True
        try:
            conversation.handshake(START_TIMEOUT_S)
        except TimeoutError:
            raise errors.SessionStartError(
                f"The kernel on the gateway at {self._ex.url} did not answer within "
                f"{START_TIMEOUT_S:g} s; see the gateway's log."
            ) from None
        except KernelLost:
            raise _KernelGone() from None
        kernel.starting = False
        if self._ex.language == "python":
            code = _CD.format(path=self._path, backend=INLINE_BACKEND) + PY_SETUP
            out = OutputCollector()
            setup = conversation.run(code, START_TIMEOUT_S, out, silent=True, user_expressions=_CWD)
            cwd = conversation.reply.get("user_expressions", {}).get("cwd", {})
            if not setup.ok or cwd.get("status") != "ok":
                why = setup.lost or setup.error or cwd
                raise errors.SessionStartError(f"The kernel's set-up failed: {why}")
            self._path = str(ast.literal_eval(cwd["data"]["text/plain"]))
            self.workspace = Path(self._path)
        self._prepared = True

    def _drop_kernel(self) -> None:
        """Forget the kernel, asking the gateway to shut it down if it still has it."""
        kernel, self._kernel, self._prepared = self._kernel, None, False
        if kernel is not None:
            kernel.disconnect()
            with contextlib.suppress(Exception):
                self._ex.http("DELETE", f"/api/kernels/{kernel.id}")

    def _discard_kernel(self) -> None:
        """Set the kernel up again before the next cell; replace it if the gateway lost it."""
        kernel, self._prepared = self._kernel, False
        if kernel is not None:
            kernel.drop_pending()  # this kernel's leftovers: for no later cell
            if kernel.ended:
                kernel.disconnect()
            elif kernel.gone:
                self._drop_kernel()

    def _reset_kernel(self) -> None:
        if self._kernel is not None and not self._kernel.post("restart"):
            self._drop_kernel()
        self._prepared = False

    def _shutdown(self) -> None:
        """Shut the kernel down on the gateway, removing its own directory there."""
        if self._owned and self._prepared and self._path and self._kernel is not None:
            code = f"__import__('shutil').rmtree({self._path!r}, ignore_errors=True)"
            with contextlib.suppress(Exception):
                cleanup = self._conversation(self._kernel)
                cleanup.run(code, CLEANUP_TIMEOUT_S, OutputCollector(), silent=True)
        self._drop_kernel()


def _read(ws: Any, into: queue.Queue[Message | None]) -> None:
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
