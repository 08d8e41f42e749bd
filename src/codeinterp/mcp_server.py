"""`codeinterp mcp`: an MCP server (official `mcp` SDK) so other agents can use codeinterp.

Tools: run_python, list_files, read_file, write_file, restart_session, close_session. Sessions
are opened lazily per `session_id` (ids are shared by every client of one server) and all
closed at shutdown. Executor calls are blocking, so they run in worker threads.

Errors: an exception raised by the user's code is a normal result the model should read; it
comes back as text starting with "Error:" and `isError` false. `isError` is true when the
call could not do its job: the cell timed out or its interpreter died (the text says so, and
the next call works), a path escapes the workspace, a file is missing, a bad argument.
"""

from __future__ import annotations

import base64
import codecs
import errno
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent

from codeinterp import __version__
from codeinterp.errors import CodeinterpError
from codeinterp.executors import Executor, Session, get_executor
from codeinterp.executors.base import DEFAULT_TIMEOUT_S
from codeinterp.outputs import Display, Execution
from codeinterp.render import render_for_model

T = TypeVar("T")

MAX_TEXT_CHARS = 20_000  # of a cell's rendered output, cut from the middle beyond this
MAX_READ_CHARS = 100_000  # of a text file returned by read_file
MAX_READ_BYTES = 8 << 20  # larger files are described, not returned
MAX_LISTED = 1000
SANDBOX_WORKSPACE = "/workspace"  # where the sandbox executor shows the workspace to the code
_SESSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}  # sniffed from the content, not the name
_NO_OUTPUT = render_for_model(Execution())
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
INSTRUCTIONS = (
    "codeinterp runs Python in persistent, sandboxed sessions (like a Jupyter kernel): "
    "variables and imports survive between run_python calls with the same session_id; the "
    "value of a cell's last expression is shown; matplotlib figures come back as images. Each "
    "session has a workspace folder (its working directory) for files."
)


class SessionPool:
    """Sessions by id, opened on first use; each with a lock so its cells run one at a time."""

    def __init__(self, executor: Executor, workspace_root: Path | None) -> None:
        self.executor, self.workspace_root = executor, workspace_root
        self._sessions: dict[str, tuple[Session, anyio.Lock]] = {}
        self._opening = anyio.Lock()

    async def get(self, session_id: str) -> tuple[Session, anyio.Lock]:
        if not _SESSION_ID.fullmatch(session_id):
            raise ToolError("session_id must be 1-64 letters, digits, '_', '-' or '.'.")
        async with self._opening:
            if session_id not in self._sessions:
                root = self.workspace_root
                workspace = None if root is None else root / session_id
                with anyio.CancelScope(shield=True):  # a session opened is a session kept
                    session = await _blocking(lambda: self.executor.open(workspace=workspace))
                self._sessions[session_id] = (session, anyio.Lock())
            return self._sessions[session_id]

    def pop(self, session_id: str) -> tuple[Session, anyio.Lock] | None:
        return self._sessions.pop(session_id, None)

    def close_all(self) -> None:
        while self._sessions:
            session, _ = self._sessions.popitem()[1]
            try:
                session.close()
            except Exception:  # closing the others matters more
                pass


async def _blocking(fn: Callable[[], T], on_cancel: Callable[[], None] | None = None) -> T:
    """Run `fn` in a worker thread. If the caller is cancelled (the client gave up), call
    `on_cancel` (e.g. interrupt the cell) and wait for `fn` to end before re-raising."""
    done = threading.Event()

    def call() -> T:
        try:
            return fn()
        finally:
            done.set()

    try:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        if on_cancel is not None:
            on_cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(done.wait)
        raise
    except CodeinterpError as exc:
        raise ToolError(str(exc)) from exc


def execution_result(execution: Execution, timeout_s: float | None) -> CallToolResult:
    """Text (render_for_model, without image placeholders) then each image as ImageContent."""
    images: list[tuple[str, bytes]] = []
    kept = []
    for output in execution.outputs:
        image = _image_of(output) if isinstance(output, Display) else None
        if image is None:
            kept.append(output)
        else:
            images.append(image)
    bare = Execution(outputs=[], execution_count=execution.execution_count)
    sections = [render_for_model(replace(bare, outputs=kept), max_chars=MAX_TEXT_CHARS)]
    if execution.timed_out:
        limit = f" of {timeout_s:g} s" if timeout_s is not None else ""
        sections.append(f"Error: the cell hit its time limit{limit} and was interrupted.")
    elif execution.lost is not None:
        sections.append(f"Error: the interpreter was lost ({execution.lost}).")
    elif execution.error is not None:
        sections.append("Error:")
    if execution.lost is not None:
        sections.append(
            "Variables and imports are gone; files in the workspace were kept. "
            "The next call runs in a fresh interpreter."
        )
    if execution.error is not None:
        sections.append(render_for_model(replace(bare, error=execution.error)))
    text = "\n".join(s for s in sections if s != _NO_OUTPUT)
    content: list[ContentBlock] = []
    if text or not images:
        content.append(TextContent(type="text", text=text or _NO_OUTPUT))
    content += [
        ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime)
        for mime, data in images
    ]
    return CallToolResult(content=content, is_error=execution.timed_out or bool(execution.lost))


def _image_of(display: Display) -> tuple[str, bytes] | None:
    for mime in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        data = display.data.get(mime)
        if isinstance(data, bytes):
            return mime, data
    return None


# -- files: every path is opened component by component beneath the workspace, never
# following a symbolic link, so nothing outside it can be reached (no check-then-use race).


def _parts(workspace: Path, path: str) -> list[str]:
    pure = PurePosixPath(path.strip())
    if pure.is_absolute():
        for base in (str(workspace), SANDBOX_WORKSPACE):
            if pure.is_relative_to(base):
                pure = pure.relative_to(base)
                break
        else:
            raise ToolError(f"{path!r} is outside the workspace; use a relative path.")
    parts = [p for p in pure.parts if p != "."]
    if ".." in parts:
        raise ToolError(f"{path!r}: '..' is not allowed; use a path inside the workspace.")
    if not parts:
        raise ToolError("Give a file path inside the workspace.")
    return parts


def _open_in(workspace: Path, path: str, flags: int) -> int:
    """Open `path` beneath `workspace` one component at a time, following no symbolic link
    (no check-then-use race); with O_CREAT, missing folders are made, owned like the
    workspace. Returns the open regular file."""
    parts = _parts(workspace, path)
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    owner = os.fstat(fd)
    try:
        for name in parts[:-1]:
            if flags & os.O_CREAT:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    _own(name, fd, owner)
                except FileExistsError:
                    pass
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        child = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=fd)
        if flags & os.O_CREAT:
            _own(parts[-1], fd, owner)
        os.close(fd)
        fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ToolError(f"{path!r} is not a regular file.")
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ToolError(f"{path!r}: a part of it is a symbolic link or not a folder.") from exc
        raise ToolError(f"{path!r}: {exc.strerror or exc}.") from exc
    except BaseException:
        os.close(fd)
        raise


def _own(name: str, dir_fd: int, owner: os.stat_result) -> None:
    """On a root host the session runs as its own uid: give it what we create."""
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(name, owner.st_uid, owner.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def read_file_blocks(workspace: Path, path: str) -> list[ContentBlock]:
    fd = _open_in(workspace, path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        size, data = os.fstat(fd).st_size, f.read(MAX_READ_BYTES + 1)
    mime = next((m for magic, m in _IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if mime is not None and len(data) <= MAX_READ_BYTES:
        note = TextContent(type="text", text=f"{path}: {mime}, {len(data)} bytes")
        encoded = base64.b64encode(data).decode("ascii")
        return [note, ImageContent(type="image", data=encoded, mime_type=mime)]
    try:  # an incremental decoder forgives a character cut at the end of what was read
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:MAX_READ_BYTES])
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        hint = "inspect it with run_python, e.g. open(path, 'rb')"
        return [TextContent(type="text", text=f"{path}: binary, {size} bytes; {hint}.")]
    if len(text) > MAX_READ_CHARS or size > MAX_READ_BYTES:
        text = text[:MAX_READ_CHARS] + f"\n…[cut: the file has {size} bytes]"
    return [TextContent(type="text", text=text)]


def write_file_text(workspace: Path, path: str, content: str) -> str:
    data = content.encode("utf-8")
    fd = _open_in(workspace, path, os.O_WRONLY | os.O_CREAT)
    with os.fdopen(fd, "wb") as f:
        f.truncate()  # only now that it is known to be a regular file of ours
        f.write(data)
    return f"Wrote {len(data)} bytes to {'/'.join(_parts(workspace, path))}."


def list_workspace(workspace: Path) -> str:
    entries: list[tuple[tuple[str, ...], str]] = []
    for top, dirs, files in os.walk(workspace):  # never descends into linked folders
        for name in dirs + files:
            full = Path(top, name)
            try:
                rel, info = full.relative_to(workspace), full.lstat()
                line = f"{rel}  ({info.st_size} bytes)"
                if stat.S_ISLNK(info.st_mode):
                    line = f"{rel} -> {os.readlink(full)}"
                elif stat.S_ISDIR(info.st_mode):
                    line = f"{rel}/"
            except OSError:  # removed while we looked
                continue
            entries.append((rel.parts, line))
        if len(entries) >= MAX_LISTED:
            break
    lines = [line for _, line in sorted(entries)[:MAX_LISTED]]
    more = f"\n…[stopped after {MAX_LISTED} entries]" if len(entries) >= MAX_LISTED else ""
    return "\n".join(lines) + more if lines else "(the workspace is empty)"


def build_server(pool: SessionPool, default_s: float) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "codeinterp", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    @server.tool()
    async def run_python(
        code: str, session_id: str = "default", timeout_s: float | None = None
    ) -> CallToolResult:
        """Run Python code in a persistent session and return its output.

        Variables and imports persist between calls with the same session_id. The value of
        the last expression is shown; plots (matplotlib) come back as images. The working
        directory is the session's workspace. An exception in the code comes back as text
        starting with "Error:". timeout_s: wall-clock limit for this call (server default
        otherwise); on timeout the cell is interrupted and the session stays usable.
        """
        if timeout_s is not None and timeout_s <= 0:
            raise ToolError("timeout_s must be positive.")
        session, lock = await pool.get(session_id)
        async with lock:
            execution = await _blocking(
                lambda: session.execute(code, timeout_s=timeout_s), on_cancel=session.interrupt
            )
        return execution_result(execution, timeout_s if timeout_s is not None else default_s)

    @server.tool()
    async def list_files(session_id: str = "default") -> str:
        """List the files in the session's workspace (paths relative to it, with sizes)."""
        session, _ = await pool.get(session_id)
        return await _blocking(lambda: list_workspace(session.workspace))

    @server.tool()
    async def read_file(path: str, session_id: str = "default") -> CallToolResult:
        """Read a file from the session's workspace: text as text, images as images."""
        session, _ = await pool.get(session_id)
        blocks = await _blocking(lambda: read_file_blocks(session.workspace, path))
        return CallToolResult(content=blocks)

    @server.tool()
    async def write_file(path: str, content: str, session_id: str = "default") -> str:
        """Write text to a file in the session's workspace (folders are created as needed)."""
        session, _ = await pool.get(session_id)
        return await _blocking(lambda: write_file_text(session.workspace, path, content))

    @server.tool()
    async def restart_session(session_id: str = "default") -> str:
        """Restart the session's interpreter: variables and imports are cleared, files kept."""
        session, lock = await pool.get(session_id)
        session.interrupt()
        async with lock:
            await _blocking(session.restart)
        return f"Session {session_id!r} restarted; its workspace files were kept."

    @server.tool()
    async def close_session(session_id: str) -> str:
        """Close a session and free its resources (a later call with the id opens a new one)."""
        entry = pool.pop(session_id)
        if entry is None:
            return f"No open session {session_id!r}."
        session, lock = entry
        session.interrupt()
        async with lock:
            await _blocking(session.close)
        kept = "" if pool.workspace_root is None else f" Its files remain in {session.workspace}."
        return f"Session {session_id!r} closed.{kept}"

    return server


async def _serve_http(server: MCPServer[Any], host: str, port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(host=host)  # DNS-rebinding protection on loopback
    # A signal stops the server after at most 3 s: running cells are then interrupted.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3
    )
    await uvicorn.Server(config).serve()


def serve(
    *,
    executor: str = "sandbox",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workspace_root: Path | None = None,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> int:
    """Run the server over stdio (default) or streamable HTTP until the client or a signal
    ends it; then close every session and the executor."""
    if workspace_root is not None:
        workspace_root.mkdir(parents=True, exist_ok=True)
        workspace_root = workspace_root.resolve()
    engine = get_executor(executor, timeout_s=timeout_s)
    pool = SessionPool(engine, workspace_root)
    server = build_server(pool, timeout_s)

    def stop(signum: int, frame: object) -> None:
        # Not an exception: at shutdown anyio waits for the SDK's stdin reader, a thread
        # blocked until the client writes or closes the pipe. (Over HTTP, uvicorn shuts down
        # gracefully first, then re-raises the signal here.)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # a second signal kills a stuck cleanup
        pool.close_all()
        engine.close()
        os._exit(0)

    for sig in SIGNALS:
        signal.signal(sig, stop)
    try:
        if http:
            url_host = f"[{host}]" if ":" in host else host
            print(f"codeinterp: MCP server at http://{url_host}:{port}/mcp", file=sys.stderr)
            anyio.run(_serve_http, server, host, port)
        else:
            anyio.run(server.run_stdio_async)  # until the client closes our stdin
    finally:
        pool.close_all()
        engine.close()
    return 0


__all__ = ["SessionPool", "build_server", "execution_result", "serve"]
