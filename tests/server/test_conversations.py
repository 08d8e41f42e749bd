"""Conversations over HTTP with a scripted model: SSE turns, history, interrupt, reset, export."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nbformat
import pytest

from codeinterp.models.scripted import ScriptedModel
from codeinterp.server.conversations import Live, merge_user_messages
from tests.server.conftest import running_app, scripted, settings_for, sse_events

pytestmark = pytest.mark.anyio

COMPUTE = "Let me compute.\n```python\nx = sum(range(10))\nprint(x)\n```"
ANSWER = "The sum is 45."


async def new_conversation(client: httpx.AsyncClient, title: str = "test") -> dict[str, Any]:
    reply = await client.post("/api/conversations", json={"title": title})
    assert reply.status_code == 201, reply.text
    conversation: dict[str, Any] = reply.json()
    return conversation


async def say(client: httpx.AsyncClient, conversation_id: str, text: str) -> list[tuple[str, Any]]:
    reply = await client.post(f"/api/conversations/{conversation_id}/messages", json={"text": text})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    return sse_events(reply.text)


def collapse(names: list[str]) -> list[str]:
    """Event names with runs of `text` / `output` folded into one."""
    folded: list[str] = []
    for name in names:
        if not (folded and folded[-1] == name and name in ("text", "output")):
            folded.append(name)
    return folded


async def test_a_turn_streams_the_loop_events_in_order_then_done(tmp_path: Path) -> None:
    model = ScriptedModel([COMPUTE, ANSWER])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        conversation = await new_conversation(client, "sums")
        assert conversation["title"] == "sums"
        assert conversation["session_id"] and conversation["model"] == "scripted"
        events = await say(client, conversation["id"], "Sum 0..9")
    names = [name for name, _ in events]
    assert collapse(names) == [
        "user",
        "text",
        "code",
        "output",
        "execution",
        "round",
        "text",
        "round",
        "finished",
        "done",
    ]
    data = dict(events)
    assert data["user"]["text"] == "Sum 0..9" and data["user"]["turn"] == 1
    assert data["code"]["code"] == "x = sum(range(10))\nprint(x)"
    assert data["output"]["output"]["text"] == "45\n"
    assert data["execution"]["execution"]["error"] is None
    assert data["finished"]["stop_reason"] == "answered"
    assert data["finished"]["answer"] == ANSWER
    assert data["done"] == {}
    seqs = [d["seq"] for name, d in events if name != "done"]
    assert seqs == sorted(seqs)


async def test_events_are_stored_and_the_history_carries_to_the_next_turn(
    tmp_path: Path,
) -> None:
    model = ScriptedModel([COMPUTE, ANSWER, "```python\nx * 2\n```", "It is 90."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        conversation = await new_conversation(client)
        first = await say(client, conversation["id"], "Sum 0..9")
        second = await say(client, conversation["id"], "Double it")
        stored = (await client.get(f"/api/conversations/{conversation['id']}")).json()
    assert second[-2][1]["answer"] == "It is 90."
    assert dict(second)["execution"]["execution"]["outputs"][0]["data"]["text/plain"] == "90"
    streamed = [d for name, d in first + second if name != "done"]
    assert [{k: v for k, v in e.items()} for e in stored["events"]] == streamed
    assert {e["turn"] for e in stored["events"]} == {1, 2}
    # The model saw the first turn when it answered the second.
    third_prompt = model.prompts[2]
    assert [m.role for m in third_prompt] == ["system", "user", "assistant", "user", "assistant",
                                              "user"]  # fmt: skip
    assert third_prompt[1].content.startswith("Sum 0..9")
    assert third_prompt[-1].content.startswith("Double it")


async def test_conversations_are_listed_newest_first(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        first = await new_conversation(client, "first")
        second = await new_conversation(client, "second")
        listed = (await client.get("/api/conversations")).json()
    assert [c["id"] for c in listed] == [second["id"], first["id"]]
    assert listed[0]["running"] is False


async def test_a_second_message_during_a_turn_is_a_409_and_interrupt_stops_it(
    tmp_path: Path,
) -> None:
    slow = "```python\nimport time\nprint('working', flush=True)\ntime.sleep(30)\n```"
    model = ScriptedModel([slow, "never read"])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        cid = (await new_conversation(client))["id"]
        turn = asyncio.ensure_future(say(client, cid, "Work hard"))
        await wait_until(client, cid, lambda events: any(e["type"] == "output" for e in events))
        assert (await client.get(f"/api/conversations/{cid}")).json()["running"] is True
        busy = await client.post(f"/api/conversations/{cid}/messages", json={"text": "again"})
        assert busy.status_code == 409
        assert "interrupt" in busy.json()["detail"]
        assert (await client.post(f"/api/conversations/{cid}/reset")).status_code == 409
        started = time.monotonic()
        interrupted = await client.post(f"/api/conversations/{cid}/interrupt")
        assert interrupted.json() == {"ok": True}
        events = await turn
        assert time.monotonic() - started < 5
        assert dict(events)["finished"]["stop_reason"] == "interrupted"
        assert dict(events)["execution"]["execution"]["error"]["ename"] == "KeyboardInterrupt"
        assert events[-1][0] == "done"
        assert (await client.get(f"/api/conversations/{cid}")).json()["running"] is False


async def wait_until(
    client: httpx.AsyncClient, cid: str, check: Any, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Poll the stored events (the ASGI transport delivers a stream only once it ends)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events: list[dict[str, Any]] = (await client.get(f"/api/conversations/{cid}")).json()[
            "events"
        ]
        if check(events):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError("the expected events never came")


async def test_reset_clears_the_history_and_the_variables_and_keeps_files(
    tmp_path: Path,
) -> None:
    write = "```python\nsecret = 42\nopen('kept.txt', 'w').write('kept')\n```"
    check = "```python\nprint('secret' in globals(), open('kept.txt').read())\n```"
    model = ScriptedModel([write, "Written.", check, "Checked."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        conversation = await new_conversation(client)
        cid = conversation["id"]
        await say(client, cid, "Write it")
        reset = await client.post(f"/api/conversations/{cid}/reset")
        assert reset.status_code == 200 and reset.json()["id"] == cid
        events = await say(client, cid, "Check it")
        files = (await client.get(f"/api/sessions/{conversation['session_id']}/files")).json()
        stored = (await client.get(f"/api/conversations/{cid}")).json()["events"]
    assert dict(events)["output"]["output"]["text"] == "False kept\n"
    assert [f["path"] for f in files] == ["kept.txt"]
    assert [m.role for m in model.prompts[2]] == ["system", "user"]  # history cleared
    assert "reset" in [e["type"] for e in stored]  # the page still shows what came before


async def test_the_notebook_export_is_valid_nbformat_with_outputs(tmp_path: Path) -> None:
    plot = (
        "Plotting.\n```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
        "plt.show()\nprint('drawn')\n```"
    )
    model = ScriptedModel([plot, "Here is the plot."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        conversation = await new_conversation(client, "A plot: v1/2")
        await say(client, conversation["id"], "Plot something")
        reply = await client.get(f"/api/conversations/{conversation['id']}/notebook")
    assert reply.status_code == 200
    assert reply.headers["content-disposition"] == 'attachment; filename="A-plot-v1-2.ipynb"'
    notebook = nbformat.reads(reply.text, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(notebook)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code_cells) == 1
    outputs = code_cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any(o.get("text") == "drawn\n" for o in outputs)
    assert json.loads(reply.text)["nbformat"] == 4


async def test_delete_forgets_the_conversation_and_removes_its_workspace(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(["```python\nopen('f.txt', 'w').write('x')\n```", "Done."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(model))) as client:
        cid = (await new_conversation(client))["id"]
        await say(client, cid, "Write")
        workspace = tmp_path / "workspaces" / cid
        assert (workspace / "f.txt").exists()
        refused = await client.delete(f"/api/sessions/{cid}")
        assert (
            refused.status_code == 409 and "DELETE /api/conversations" in refused.json()["detail"]
        )
        assert (await client.delete(f"/api/conversations/{cid}")).status_code == 204
        assert (await client.get(f"/api/conversations/{cid}")).status_code == 404
        assert (await client.get(f"/api/sessions/{cid}")).status_code == 404
        assert not workspace.exists()
        missing = await client.post(f"/api/conversations/{cid}/messages", json={"text": "hi"})
        assert missing.status_code == 404
        assert "GET /api/conversations" in missing.json()["detail"]


async def test_a_restarted_service_rebuilds_the_history_on_a_new_session(tmp_path: Path) -> None:
    first = ScriptedModel([COMPUTE, ANSWER])
    async with running_app(settings_for(tmp_path, model_factory=scripted(first))) as client:
        cid = (await new_conversation(client))["id"]
        await say(client, cid, "Sum 0..9")
    second = ScriptedModel(["```python\nprint('x' in globals())\n```", "x is gone."])
    async with running_app(settings_for(tmp_path, model_factory=scripted(second))) as client:
        session = (await client.get(f"/api/sessions/{cid}")).json()
        assert session["state"] == "dead"  # lost with the old service, replaced on next use
        events = await say(client, cid, "Is x still there?")
        stored = (await client.get(f"/api/conversations/{cid}")).json()["events"]
    assert events[0][0] == "session_lost"
    assert "files in the workspace are kept" in events[0][1]["detail"]
    assert dict(events)["output"]["output"]["text"] == "False\n"
    assert [e["type"] for e in stored].count("session_lost") == 1
    prompt = second.prompts[0]
    assert [m.role for m in prompt] == ["system", "user", "assistant", "user", "assistant",
                                        "user"]  # fmt: skip
    assert prompt[2].content == COMPUTE
    assert prompt[-1].content.startswith("Is x still there?")


async def test_a_model_that_cannot_load_is_a_503(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path, model="llamacpp:/no/such/model.gguf")) as client:
        cid = (await new_conversation(client))["id"]
        reply = await client.post(f"/api/conversations/{cid}/messages", json={"text": "hi"})
    assert reply.status_code == 503, reply.text
    assert "No GGUF model file" in reply.json()["detail"]
    assert "--model" in reply.json()["detail"]


async def test_the_stored_messages_rebuild_exactly_the_history_the_loop_had(
    tmp_path: Path,
) -> None:
    """Also when a turn ends on its round limit and the next one joins the unread results."""
    model = ScriptedModel(["```python\nprint(1)\n```", "```python\nprint(2)\n```", "Two."])
    settings = settings_for(tmp_path, model_factory=scripted(model), max_rounds=1)
    async with running_app(settings) as client:
        cid = (await new_conversation(client))["id"]
        first = await say(client, cid, "One")
        assert dict(first)["finished"]["stop_reason"] == "max_rounds"
        second = await say(client, cid, "Two")
        assert dict(second)["finished"]["stop_reason"] == "max_rounds"
        runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
        interpreter = runtime.conversations._live[cid].interpreter
        rebuilt = merge_user_messages(runtime.store.messages(cid))
    assert [interpreter.messages[0], *rebuilt] == interpreter.messages
    joined = interpreter.messages[3]  # results of turn 1, then the text of turn 2
    assert joined.role == "user" and "1" in joined.content and "Two" in joined.content


def test_a_client_leaving_after_its_turn_does_not_interrupt_the_next_turn() -> None:
    interrupted: list[bool] = []
    live = Live("c")
    live.interpreter = SimpleNamespace(interrupt=lambda: interrupted.append(True))  # type: ignore[assignment]
    live.turn_lock.acquire()
    live.turns = 2  # turn 1's stream notices its client left only once turn 2 runs
    live.interrupt(1)
    assert interrupted == []
    live.interrupt(2)
    assert interrupted == [True]
