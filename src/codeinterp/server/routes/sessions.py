"""Sessions without a model: create, inspect, interrupt, restart, delete, execute (JSON or SSE).

Executing and restarting count as uses of a session (they restart its idle time, and it is
never released as idle while they run); looking at it or interrupting it do not.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response, status

from codeinterp.errors import CodeinterpError, SessionBusy
from codeinterp.executors.base import Session, SessionState
from codeinterp.outputs import Output, output_to_dict
from codeinterp.server.deps import RuntimeDep
from codeinterp.server.runtime import Runtime
from codeinterp.server.schemas import ExecuteRequest, ExecutionDict, Ok, SessionCreate, SessionInfo
from codeinterp.server.sessions import SessionEntry
from codeinterp.server.sse import EventStream, ThreadFeed

router = APIRouter(prefix="/sessions", tags=["sessions"])

STREAM_DOC = (
    "With `?stream=true`: Server-Sent Events, `event: output` per output as it is produced, "
    "then exactly one `event: done` (data: the execution) or `event: error` (data: `{detail}`). "
    "Closing the connection interrupts the cell."
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SessionInfo)
async def create_session(body: SessionCreate, rt: RuntimeDep) -> dict[str, Any]:
    executor = body.executor or rt.settings.executor
    entry = await rt.run(rt.sessions.create, executor, timeout_s=body.timeout_s)
    return entry.to_dict()


@router.get("", response_model=list[SessionInfo])
async def list_sessions(rt: RuntimeDep) -> list[dict[str, Any]]:
    return [entry.to_dict() for entry in rt.sessions.list()]


@router.get("/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, rt: RuntimeDep) -> dict[str, Any]:
    return rt.sessions.get(session_id).to_dict()


@router.post("/{session_id}/interrupt", response_model=Ok)
async def interrupt_session(session_id: str, rt: RuntimeDep) -> Ok:
    entry = rt.sessions.get(session_id)
    if entry.session is not None:
        await rt.run(entry.session.interrupt)
    return Ok()


@router.post("/{session_id}/restart", response_model=SessionInfo)
async def restart_session(session_id: str, rt: RuntimeDep) -> dict[str, Any]:
    with rt.sessions.in_use(session_id) as entry:
        session, opened = await rt.run(rt.sessions.live, entry)
        if not opened:
            await rt.run(session.restart)
        return entry.to_dict()


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: str, rt: RuntimeDep) -> Response:
    await rt.run(rt.sessions.remove, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{session_id}/execute",
    response_model=ExecutionDict,
    description=STREAM_DOC,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def execute(
    session_id: str, body: ExecuteRequest, rt: RuntimeDep, stream: bool = False
) -> Any:
    entry = rt.sessions.hold(session_id)  # until the cell ends: not released as idle meanwhile
    streaming = False
    try:
        session = rt.sessions.open_now(entry) or (await rt.run(rt.sessions.live, entry))[0]
        timeout_s = body.timeout_s or entry.timeout_s
        if not stream:
            execution = await rt.run(session.execute, body.code, timeout_s=timeout_s)
            return execution.to_dict()
        if session.state is SessionState.BUSY:
            raise SessionBusy()  # early, as a 409, rather than an error event
        cell = _stream_cell(rt, entry, session, body.code, timeout_s)
        streaming = True
        return EventStream(cell)
    finally:
        if not streaming:
            rt.sessions.release(entry)


def _stream_cell(
    rt: Runtime, entry: SessionEntry, session: Session, code: str, timeout_s: float | None
) -> AsyncIterator[bytes]:
    """The cell's outputs as SSE frames; the cell runs in a worker thread.

    The worker releases the held `entry` when the cell ends, whether or not anyone listens.
    """
    feed = ThreadFeed()
    finished = threading.Event()

    def on_output(output: Output) -> None:
        feed.emit("output", output_to_dict(output))

    def work() -> None:
        try:
            execution = session.execute(code, timeout_s=timeout_s, on_output=on_output)
            feed.emit("done", execution.to_dict())
        except CodeinterpError as exc:
            feed.emit("error", {"detail": str(exc)})
        except Exception as exc:  # reported to the client; the service goes on
            feed.emit("error", {"detail": f"{type(exc).__name__}: {exc}"})
        finally:
            rt.sessions.release(entry)
            finished.set()
            feed.end()

    def on_disconnect() -> None:
        if not finished.is_set():  # the client left mid-cell: stop the cell
            rt.spawn(session.interrupt)

    rt.spawn(work)
    return feed.frames(on_disconnect)
