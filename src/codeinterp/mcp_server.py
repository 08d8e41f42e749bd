"""`codeinterp mcp`: an MCP server (official `mcp` SDK) so other agents can use codeinterp.

Tools: run_python, list_files, read_file, write_file, restart_session, close_session. Sessions
are opened lazily per `session_id` (ids are shared by every client of one server) and all
closed at shutdown. Executor calls are blocking, so they run in worker threads.

Errors: an exception raised by the user's code is a normal result the model should read; it
comes back as text starting with "Error:" and `isError` false. `isError` is true when the
call could not do its job: the cell timed out or its interpreter died (the text says so, and
the next call works), a path escapes the workspace, a file is missing, a bad argument.
A cell's result is shaped in `mcp_results`, workspace files are reached through `mcp_files`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult

from codeinterp import __version__
from codeinterp.errors import CodeinterpError
from codeinterp.executors import Executor, Session, get_executor
from codeinterp.executors.base import DEFAULT_TIMEOUT_S
from codeinterp.mcp_files import (
    ensure_local_files,
    list_workspace,
    read_file_blocks,
    write_file_text,
)
from codeinterp.mcp_results import execution_result

T = TypeVar("T")

_SESSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
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
        ensure_local_files(pool.executor)
        session, _ = await pool.get(session_id)
        return await _blocking(lambda: list_workspace(session.workspace))

    @server.tool()
    async def read_file(path: str, session_id: str = "default") -> CallToolResult:
        """Read a file from the session's workspace: text as text, images as images."""
        ensure_local_files(pool.executor)
        session, _ = await pool.get(session_id)
        blocks = await _blocking(lambda: read_file_blocks(session.workspace, path))
        return CallToolResult(content=blocks)

    @server.tool()
    async def write_file(path: str, content: str, session_id: str = "default") -> str:
        """Write text to a file in the session's workspace (folders are created as needed)."""
        ensure_local_files(pool.executor)
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
    executor_options: dict[str, Any] | None = None,
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
    engine = get_executor(executor, timeout_s=timeout_s, **(executor_options or {}))
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
