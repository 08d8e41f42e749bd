"""Conversations: the loop over HTTP (a turn streams as Server-Sent Events)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from codeinterp.server.deps import RuntimeDep
from codeinterp.server.runtime import Runtime
from codeinterp.server.schemas import (
    ConversationCreate,
    ConversationDetail,
    ConversationInfo,
    MessageCreate,
    Ok,
)
from codeinterp.server.sse import EventStream, ThreadFeed
from codeinterp.server.turns import Live

router = APIRouter(prefix="/conversations", tags=["conversations"])

TURN_DOC = (
    "Server-Sent Events: `event: <type>` per loop event as it happens (`session_lost`, `user`, "
    "`text`, `code`, `output`, `execution`, `round`, `finished`; data = the event dict with "
    "`turn` and `seq`), then `event: done` (data `{}`) or `event: error` (data `{detail}`). "
    "409 while another turn of the conversation runs. Closing the connection interrupts the "
    "turn."
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ConversationInfo)
async def create_conversation(body: ConversationCreate, rt: RuntimeDep) -> dict[str, Any]:
    return await rt.run(rt.conversations.create, body.title)


@router.get("", response_model=list[ConversationInfo])
async def list_conversations(rt: RuntimeDep) -> list[dict[str, Any]]:
    return await rt.run(rt.conversations.list)


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(conversation_id: str, rt: RuntimeDep) -> dict[str, Any]:
    return await rt.run(rt.conversations.get, conversation_id)


@router.post(
    "/{conversation_id}/messages",
    description=TURN_DOC,
    response_class=EventStream,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def post_message(conversation_id: str, body: MessageCreate, rt: RuntimeDep) -> EventStream:
    await rt.run(rt.model)  # a model that cannot load is a 503 now, not an error event later
    live = await rt.run(rt.conversations.begin_turn, conversation_id)
    return EventStream(_stream_turn(rt, live, body.text))


def _stream_turn(rt: Runtime, live: Live, text: str) -> AsyncIterator[bytes]:
    feed = ThreadFeed()

    def work() -> None:
        try:
            rt.conversations.run_turn(live, text, feed.emit)
        finally:
            feed.end()

    turn = live.turns

    def on_disconnect() -> None:
        # Only this turn: a client that leaves right after `done` must not stop the next one.
        # In a thread: interrupting a remote kernel (gateway) is a network call.
        rt.spawn(lambda: live.interrupt(turn))

    rt.spawn(work)
    return feed.frames(on_disconnect)


@router.post("/{conversation_id}/interrupt", response_model=Ok)
async def interrupt_conversation(conversation_id: str, rt: RuntimeDep) -> Ok:
    await rt.run(rt.conversations.interrupt, conversation_id)
    return Ok()


@router.post("/{conversation_id}/reset", response_model=ConversationInfo)
async def reset_conversation(conversation_id: str, rt: RuntimeDep) -> dict[str, Any]:
    return await rt.run(rt.conversations.reset, conversation_id)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_conversation(conversation_id: str, rt: RuntimeDep) -> Response:
    await rt.run(rt.conversations.delete, conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{conversation_id}/notebook",
    responses={200: {"content": {"application/x-ipynb+json": {}}}},
)
async def export_notebook(conversation_id: str, rt: RuntimeDep) -> JSONResponse:
    title, notebook = await rt.run(rt.conversations.notebook, conversation_id)
    name = re.sub(r"[^\w.-]+", "-", title, flags=re.ASCII).strip("-.") or "conversation"
    return JSONResponse(
        notebook,
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{name}.ipynb"'},
    )
