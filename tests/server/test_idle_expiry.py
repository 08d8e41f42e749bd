"""Sessions nobody uses are released after `session_idle_timeout_s`; sessions in use never are.

The timeout is 1 s, so the reaper sweeps every 0.1 s. A session "in use" runs a cell that
waits for a file `go` to appear in its workspace, so it is busy for exactly as long as the test
wants; an idle *witness* session created after that cell started proves that the reaper swept
past the busy session's deadline: when the witness is gone, the busy session was idle longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeinterp.executors.base import SessionState
from codeinterp.models.scripted import ScriptedModel
from codeinterp.server.runtime import Runtime
from codeinterp.server.settings import ServerSettings
from tests.server.conftest import running_app, scripted, settings_for, sse_events

pytestmark = pytest.mark.anyio

IDLE_S = 1.0
WAIT_FOR_GO = (
    "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.02)\nprint('released')"
)


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until `check()` is true (the reaper works in the background)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the expected state never came")
        await asyncio.sleep(0.05)


async def new_session(client: httpx.AsyncClient) -> str:
    reply = await client.post("/api/sessions", json={})
    assert reply.status_code == 201, reply.text
    session_id: str = reply.json()["id"]
    return session_id


def gone(client: httpx.AsyncClient, session_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await client.get(f"/api/sessions/{session_id}")).status_code == 404

    return check


def in_state(
    client: httpx.AsyncClient, session_id: str, state: str
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        reply = await client.get(f"/api/sessions/{session_id}")
        return bool(reply.json()["state"] == state)

    return check


async def send_go(client: httpx.AsyncClient, session_id: str) -> None:
    reply = await client.post(f"/api/sessions/{session_id}/files", files={"file": ("go", b"")})
    assert reply.status_code == 201, reply.text


async def test_an_unused_session_is_closed_and_its_id_then_answers_404_naming_the_option(
    tmp_path: Path,
) -> None:
    async with running_app(settings_for(tmp_path, session_idle_timeout_s=IDLE_S)) as client:
        sid = await new_session(client)
        session = runtime_of(client).sessions.get(sid).session
        assert session is not None
        await eventually(gone(client, sid))

        async def closed() -> bool:  # it is forgotten first, then closed
            return session.state is SessionState.CLOSED and not session.workspace.exists()

        await eventually(closed)
        fetched = await client.get(f"/api/sessions/{sid}")
        executed = await client.post(f"/api/sessions/{sid}/execute", json={"code": "1"})
        listed = (await client.get("/api/sessions")).json()
    assert "--session-idle-timeout" in fetched.json()["detail"]
    assert "expired" in fetched.json()["detail"]
    assert executed.status_code == 404
    assert listed == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_running_cell_keeps_its_session_while_an_unused_one_expires(
    tmp_path: Path, stream: bool
) -> None:
    async with running_app(settings_for(tmp_path, session_idle_timeout_s=IDLE_S)) as client:
        busy = await new_session(client)
        cell = asyncio.ensure_future(
            client.post(
                f"/api/sessions/{busy}/execute",
                params={"stream": str(stream).lower()},
                json={"code": WAIT_FOR_GO},
            )
        )
        await eventually(in_state(client, busy, "busy"))
        witness = await new_session(client)
        await eventually(gone(client, witness))
        assert (await client.get(f"/api/sessions/{busy}")).json()["state"] == "busy"
        await send_go(client, busy)
        reply = await cell
        after = await client.get(f"/api/sessions/{busy}")
    execution: dict[str, Any] = dict(sse_events(reply.text))["done"] if stream else reply.json()
    assert execution["outputs"][0]["text"] == "released\n"
    assert execution["lost"] is None
    assert after.status_code == 200


async def test_an_unused_conversation_session_goes_dormant_and_the_next_turn_reopens_it(
    tmp_path: Path,
) -> None:
    write = "```python\nsecret = 42\nopen('kept.txt', 'w').write('kept')\n```"
    check = "```python\nprint('secret' in globals(), open('kept.txt').read())\n```"
    model = ScriptedModel([write, "Written.", check, "Checked."])
    settings = settings_for(tmp_path, model_factory=scripted(model), session_idle_timeout_s=IDLE_S)
    async with running_app(settings) as client:
        cid = (await client.post("/api/conversations", json={})).json()["id"]
        first = await client.post(f"/api/conversations/{cid}/messages", json={"text": "Write"})
        assert dict(sse_events(first.text))["finished"]["stop_reason"] == "answered"
        session = runtime_of(client).sessions.get(cid).session
        assert session is not None
        await eventually(in_state(client, cid, "dead"))

        async def closed() -> bool:  # it is detached first, then closed
            return session.state is SessionState.CLOSED

        await eventually(closed)
        assert (await client.get(f"/api/conversations/{cid}")).status_code == 200
        files = (await client.get(f"/api/sessions/{cid}/files")).json()
        second = await client.post(f"/api/conversations/{cid}/messages", json={"text": "Check"})
    events = sse_events(second.text)
    assert events[0][0] == "session_lost"
    assert "--session-idle-timeout" in events[0][1]["detail"]
    assert [f["path"] for f in files] == ["kept.txt"]
    assert dict(events)["output"]["output"]["text"] == "False kept\n"  # new session, same files
    roles = [m.role for m in model.prompts[2]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]  # history kept


async def test_a_running_turn_keeps_its_conversation_session_while_an_unused_one_expires(
    tmp_path: Path,
) -> None:
    model = ScriptedModel([f"```python\n{WAIT_FOR_GO}\n```", "Done."])
    settings = settings_for(tmp_path, model_factory=scripted(model), session_idle_timeout_s=IDLE_S)
    async with running_app(settings) as client:
        cid = (await client.post("/api/conversations", json={})).json()["id"]
        turn = asyncio.ensure_future(
            client.post(f"/api/conversations/{cid}/messages", json={"text": "Wait"})
        )
        await eventually(in_state(client, cid, "busy"))
        witness = await new_session(client)
        await eventually(gone(client, witness))
        assert (await client.get(f"/api/sessions/{cid}")).json()["state"] == "busy"
        await send_go(client, cid)
        events = dict(sse_events((await turn).text))
    assert events["output"]["output"]["text"] == "released\n"
    assert events["execution"]["execution"]["lost"] is None
    assert events["finished"]["stop_reason"] == "answered"


def test_settings_refuse_a_negative_idle_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0 \\(never expire\\)"):
        ServerSettings(token="t", session_idle_timeout_s=-1)
