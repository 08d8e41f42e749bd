"""Sessions and execute over HTTP: JSON and Server-Sent Events, timeouts as data, no blocking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import running_app, settings_for, sse_events

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings_for(tmp_path)) as client:
        yield client


@pytest.fixture
async def sandbox_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings_for(tmp_path, executor="sandbox")) as client:
        yield client


async def new_session(client: httpx.AsyncClient, **body: object) -> str:
    reply = await client.post("/api/sessions", json=body)
    assert reply.status_code == 201, reply.text
    session_id: str = reply.json()["id"]
    return session_id


async def test_sessions_are_created_listed_fetched_and_deleted(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/sessions", json={"timeout_s": 5})
    assert created.status_code == 201
    session = created.json()
    assert session["executor"] == "repl" and session["state"] == "idle"
    assert session["timeout_s"] == 5 and session["created_at"]
    assert [s["id"] for s in (await client.get("/api/sessions")).json()] == [session["id"]]
    assert (await client.get(f"/api/sessions/{session['id']}")).json() == session
    deleted = await client.delete(f"/api/sessions/{session['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await client.get(f"/api/sessions/{session['id']}")
    assert gone.status_code == 404
    assert "POST /api/sessions" in gone.json()["detail"]
    assert (await client.get("/api/sessions")).json() == []


async def test_execute_returns_the_execution_and_state_persists(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    first = await client.post(f"/api/sessions/{sid}/execute", json={"code": "x = 6 * 7"})
    assert first.status_code == 200
    second = (await client.post(f"/api/sessions/{sid}/execute", json={"code": "x"})).json()
    assert second["outputs"] == [{"type": "result", "data": {"text/plain": "42"}, "metadata": {}}]
    assert second["error"] is None and second["timed_out"] is False
    assert second["execution_count"] == 2


async def test_errors_in_user_code_are_data_not_http_errors(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    reply = await client.post(f"/api/sessions/{sid}/execute", json={"code": "1 / 0"})
    assert reply.status_code == 200
    assert reply.json()["error"]["ename"] == "ZeroDivisionError"


async def test_execute_streams_ordered_outputs_then_one_done_event_in_the_sandbox(
    sandbox_client: httpx.AsyncClient,
) -> None:
    sid = await new_session(sandbox_client)
    code = "import sys\nfor i in range(5):\n    print(i, flush=True)\nsys.stderr.write('!')\n7"
    reply = await sandbox_client.post(
        f"/api/sessions/{sid}/execute", params={"stream": "true"}, json={"code": code}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    assert set(names[:-1]) == {"output"}
    outputs = [data for name, data in events if name == "output"]
    stdout = "".join(o["text"] for o in outputs if o.get("name") == "stdout")
    assert stdout == "0\n1\n2\n3\n4\n"
    assert outputs[-1] == {"type": "result", "data": {"text/plain": "7"}, "metadata": {}}
    done = events[-1][1]
    assert done["error"] is None and done["outputs"][-1]["data"]["text/plain"] == "7"


async def test_a_timeout_comes_back_as_data_and_the_session_survives(
    sandbox_client: httpx.AsyncClient,
) -> None:
    sid = await new_session(sandbox_client)
    started = time.monotonic()
    reply = await sandbox_client.post(
        f"/api/sessions/{sid}/execute",
        json={"code": "import time\nprint('start', flush=True)\ntime.sleep(30)", "timeout_s": 1},
    )
    assert time.monotonic() - started < 10
    assert reply.status_code == 200
    execution = reply.json()
    assert execution["timed_out"] is True
    assert execution["outputs"][0]["text"] == "start\n"
    after = await sandbox_client.post(f"/api/sessions/{sid}/execute", json={"code": "1 + 1"})
    assert after.json()["outputs"][0]["data"]["text/plain"] == "2"


async def test_a_session_default_timeout_applies_to_its_cells(client: httpx.AsyncClient) -> None:
    sid = await new_session(client, timeout_s=0.5)
    reply = await client.post(
        f"/api/sessions/{sid}/execute", json={"code": "import time; time.sleep(20)"}
    )
    assert reply.json()["timed_out"] is True


async def test_a_long_cell_does_not_delay_other_requests(client: httpx.AsyncClient) -> None:
    busy = await new_session(client)
    cell = asyncio.ensure_future(
        client.post(f"/api/sessions/{busy}/execute", json={"code": "import time; time.sleep(3)"})
    )
    await asyncio.sleep(0.3)  # the cell is running
    assert (await client.get(f"/api/sessions/{busy}")).json()["state"] == "busy"
    started = time.perf_counter()
    listed = await client.get("/api/sessions")
    elapsed = time.perf_counter() - started
    assert listed.status_code == 200
    assert elapsed < 0.5, f"GET /api/sessions took {elapsed:.3f}s while a cell ran"
    assert not cell.done()
    assert (await cell).json()["timed_out"] is False


async def test_a_busy_session_answers_409(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    cell = asyncio.ensure_future(
        client.post(f"/api/sessions/{sid}/execute", json={"code": "import time; time.sleep(2)"})
    )
    await asyncio.sleep(0.3)
    for params in ({}, {"stream": "true"}):
        second = await client.post(
            f"/api/sessions/{sid}/execute", params=params, json={"code": "1"}
        )
        assert second.status_code == 409
        assert "interrupt" in second.json()["detail"]
    await cell


async def test_interrupt_stops_a_running_cell(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    cell = asyncio.ensure_future(
        client.post(f"/api/sessions/{sid}/execute", json={"code": "import time; time.sleep(30)"})
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    assert (await client.post(f"/api/sessions/{sid}/interrupt")).json() == {"ok": True}
    execution = (await cell).json()
    assert time.monotonic() - started < 5
    assert execution["error"]["ename"] == "KeyboardInterrupt"


async def test_restart_clears_state_and_keeps_files(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    code = "x = 1\nopen('kept.txt', 'w').write('still here')"
    await client.post(f"/api/sessions/{sid}/execute", json={"code": code})
    restarted = await client.post(f"/api/sessions/{sid}/restart")
    assert restarted.status_code == 200 and restarted.json()["id"] == sid
    check = "print('x' in globals(), open('kept.txt').read())"
    reply = await client.post(f"/api/sessions/{sid}/execute", json={"code": check})
    assert reply.json()["outputs"][0]["text"] == "False still here\n"


async def test_bad_input_is_a_400_that_names_the_field(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    missing = await client.post(f"/api/sessions/{sid}/execute", json={})
    assert missing.status_code == 400
    assert "code" in missing.json()["detail"]
    typo = await client.post(f"/api/sessions/{sid}/execute", json={"code": "1", "timeout": 3})
    assert typo.status_code == 400 and "timeout" in typo.json()["detail"]
    negative = await client.post("/api/sessions", json={"timeout_s": -1})
    assert negative.status_code == 400


async def test_an_unknown_executor_is_a_400_listing_the_choices(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post("/api/sessions", json={"executor": "nope"})
    assert reply.status_code == 400
    assert "sandbox" in reply.json()["detail"]


async def test_sessions_of_another_executor_can_be_asked_for(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/sessions", json={"executor": "subprocess"})
    assert reply.status_code == 201 and reply.json()["executor"] == "subprocess"
    executed = await client.post(
        f"/api/sessions/{reply.json()['id']}/execute", json={"code": "print('hi')"}
    )
    assert executed.json()["outputs"][0]["text"] == "hi\n"


@pytest.mark.slow
async def test_a_hundred_cells_run_at_once_in_a_hundred_sandbox_sessions(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Each running cell holds a worker thread; the pool is sized well past anyio's 40."""
    ids = await asyncio.gather(*(new_session(sandbox_client) for _ in range(100)))
    code = "import time\ntime.sleep(1.5)\n'ok'"
    started = time.monotonic()
    replies = await asyncio.gather(
        *(sandbox_client.post(f"/api/sessions/{sid}/execute", json={"code": code}) for sid in ids)
    )
    elapsed = time.monotonic() - started
    assert all(r.json()["outputs"][0]["data"]["text/plain"] == "'ok'" for r in replies)
    assert elapsed < 4.0, f"100 cells of 1.5 s took {elapsed:.1f} s: they did not all run at once"
    await asyncio.gather(*(sandbox_client.delete(f"/api/sessions/{sid}") for sid in ids))
