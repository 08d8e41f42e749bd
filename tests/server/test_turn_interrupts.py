"""An interrupt stops the turn it was sent to, even before its loop starts; never the next one.

`POST /messages` claims the turn (`begin_turn`), then a worker thread builds the loop and runs
it (`run_turn`). These tests call the two steps themselves, exactly as the route does, and send
the interrupt through the real route in between: the gap is then as wide as the test wants,
with no timing to race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeinterp.models.scripted import ScriptedModel
from codeinterp.server.conversations import Live
from codeinterp.server.runtime import Runtime
from tests.server.conftest import running_app, scripted, settings_for, sse_events

pytestmark = pytest.mark.anyio

COMPUTE = "```python\nprint('ran')\n```"


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def claimed_turn(
    client: httpx.AsyncClient, cid: str, text: str, between: Callable[[Live], Awaitable[None]]
) -> dict[str, Any]:
    """Claim a turn, do `between` before its loop starts, then run it; its events by name."""
    rt = runtime_of(client)
    live = await asyncio.to_thread(rt.conversations.begin_turn, cid)
    await between(live)
    emitted: dict[str, Any] = {}
    await asyncio.to_thread(
        rt.conversations.run_turn, live, text, lambda name, data: emitted.setdefault(name, data)
    )
    return emitted


def interrupt_over_http(client: httpx.AsyncClient, cid: str) -> Callable[[Live], Awaitable[None]]:
    async def interrupt(live: Live) -> None:
        reply = await client.post(f"/api/conversations/{cid}/interrupt")
        assert reply.json() == {"ok": True}

    return interrupt


async def say(client: httpx.AsyncClient, cid: str, text: str) -> dict[str, Any]:
    reply = await client.post(f"/api/conversations/{cid}/messages", json={"text": text})
    assert reply.status_code == 200, reply.text
    return dict(sse_events(reply.text))


async def test_an_interrupt_before_the_first_loop_is_built_stops_that_turn(
    tmp_path: Path,
) -> None:
    model = ScriptedModel([COMPUTE, "Done."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        cid = (await client.post("/api/conversations", json={})).json()["id"]
        assert runtime_of(client).conversations._live.get(cid) is None  # no loop yet
        stopped = await claimed_turn(client, cid, "Run it", interrupt_over_http(client, cid))
        after = await say(client, cid, "Now run it")
    assert stopped["finished"]["stop_reason"] == "interrupted"
    assert "code" not in stopped and "done" in stopped
    assert model.prompts[0][-1].content == "Run it\n\nNow run it"  # asked first by turn 2
    assert after["finished"]["stop_reason"] == "answered"
    assert after["output"]["output"]["text"] == "ran\n"


async def test_an_interrupt_before_a_later_loop_starts_stops_that_turn_and_not_the_next(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(["First.", "Second.", "Third."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        cid = (await client.post("/api/conversations", json={})).json()["id"]
        assert (await say(client, cid, "one"))["finished"]["answer"] == "First."
        assert (await client.post(f"/api/conversations/{cid}/interrupt")).status_code == 200
        ended = runtime_of(client).conversations._live[cid].turns

        async def interrupt_the_ended_turn(live: Live) -> None:
            # What a client that left right after turn 1's `done` sends, arriving late.
            live.interrupt(ended)

        second = await claimed_turn(client, cid, "two", interrupt_the_ended_turn)
        assert second["finished"]["stop_reason"] == "answered"
        assert second["finished"]["answer"] == "Second."

        stopped = await claimed_turn(client, cid, "three", interrupt_over_http(client, cid))
        assert stopped["finished"]["stop_reason"] == "interrupted"
        assert len(model.prompts) == 2

        after = await say(client, cid, "four")
    assert after["finished"]["stop_reason"] == "answered"
    assert after["finished"]["answer"] == "Third."
    assert model.prompts[2][-1].content == "three\n\nfour"  # the stopped turn's text was kept
