"""The conversation store: round trips, images in blobs, threads, migrations, SIGKILL."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path

import pytest

from codeinterp.models.base import Message, ToolCall
from codeinterp.outputs import Display, Execution, Stream
from codeinterp.store import MIGRATIONS, SCHEMA_VERSION, NotFound, Store

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # ~10 kB, not valid base64 text as-is


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "deep" / "dir" / "codeinterp.db")


def plot_events() -> list[dict[str, object]]:
    """An `output` event and its `execution`, both carrying the same PNG (as the loop sends)."""
    display = Display({"image/png": PNG, "text/plain": "<Figure>"})
    execution = Execution([Stream("stdout", "hi\n"), display], execution_count=1)
    output = {"type": "output", "round": 1, "output": execution.to_dict()["outputs"][1]}
    return [output, {"type": "execution", "round": 1, "execution": execution.to_dict()}]


def test_conversations_round_trip(store: Store) -> None:
    a = store.create_conversation(title="first", model="m", executor="repl", workspace="/w/a")
    b = store.create_conversation(title="second", model="m", executor="repl", workspace="/w/b")
    assert len(a.id) == 32 and a.session_state == "" and a.created_at == a.updated_at
    assert store.get_conversation(a.id) == a
    assert store.get_conversation("nope") is None
    assert [c.id for c in store.list_conversations()] == [b.id, a.id]  # newest first

    updated = store.update_conversation(a.id, title="renamed", session_state="running")
    assert (updated.title, updated.session_state, updated.created_at) == (
        "renamed",
        "running",
        a.created_at,
    )
    assert updated.updated_at > a.updated_at
    with pytest.raises(ValueError, match="updatable"):
        store.update_conversation(a.id, created_at="x")
    with pytest.raises(NotFound, match="export --list"):
        store.update_conversation("nope", title="x")


def test_messages_round_trip_with_images_and_tool_calls(store: Store) -> None:
    c = store.create_conversation(title="", model="m", executor="repl", workspace="/w")
    sent = [
        Message("system", "be brief"),
        Message("user", "plot it"),
        Message("assistant", "", tool_calls=(ToolCall("c1", "python", '{"code": "1"}'),)),
        Message("tool", "1", tool_call_id="c1", images=(PNG, b"\x89PNG other")),
    ]
    for message in sent:
        store.append_message(c.id, message)
    assert store.messages(c.id) == sent
    with pytest.raises(NotFound):
        store.append_message("nope", Message("user", "hi"))


def test_event_images_move_to_blobs_and_come_back(store: Store) -> None:
    c = store.create_conversation(title="", model="m", executor="repl", workspace="/w")
    events: list[dict[str, object]] = [
        {"type": "user", "text": "plot"},
        {"type": "text", "round": 1, "text": "Here:"},
        *plot_events(),
        {"type": "finished", "stop_reason": "answered", "answer": "done", "rounds": 1},
    ]
    original = json.loads(json.dumps(events))
    seqs = [store.append_event(c.id, 1, e) for e in events]
    assert events == original  # the caller's dicts are not rewritten
    assert seqs == sorted(seqs)

    with sqlite3.connect(store.path) as raw:
        stored = [json.loads(d) for (d,) in raw.execute("SELECT data FROM events ORDER BY seq")]
        blobs = raw.execute("SELECT id, mime, data FROM blobs").fetchall()
    output_png = stored[2]["output"]["data"]["image/png"]
    execution_png = stored[3]["execution"]["outputs"][1]["data"]["image/png"]
    assert output_png == execution_png == {"blob": blobs[0][0]}  # one blob, shared
    assert blobs == [(blobs[0][0], "image/png", PNG)]
    assert all(len(json.dumps(e)) < 500 for e in stored)  # events stay small

    back = store.events(c.id)
    assert [{k: v for k, v in e.items() if k not in ("turn", "seq")} for e in back] == original
    assert [e["seq"] for e in back] == seqs and {e["turn"] for e in back} == {1}
    assert store.events(c.id, after_seq=seqs[2]) == back[3:]
    restored = Execution.from_dict(back[3]["execution"])
    assert restored.images() == [PNG]
    assert store.blob(blobs[0][0]) == ("image/png", PNG)
    with pytest.raises(NotFound):
        store.blob(10**6)
    with pytest.raises(NotFound):
        store.append_event("nope", 1, {"type": "user", "text": "x"})


def test_clear_history_keeps_events_and_delete_cascades(store: Store) -> None:
    c = store.create_conversation(title="", model="m", executor="repl", workspace="/w")
    other = store.create_conversation(title="", model="m", executor="repl", workspace="/w")
    for conversation in (c, other):
        store.append_message(conversation.id, Message("user", "hi", images=(PNG,)))
        for event in plot_events():
            store.append_event(conversation.id, 2, event)
    store.clear_history(c.id)
    assert store.messages(c.id) == []
    events = store.events(c.id)
    assert [e["type"] for e in events] == ["output", "execution", "reset"]
    assert events[-1]["turn"] == 2 and store.last_turn(c.id) == 2
    assert events[0]["output"]["data"]["image/png"] == base64.b64encode(PNG).decode()

    assert store.delete_conversation(c.id) and not store.delete_conversation(c.id)
    assert store.get_conversation(c.id) is None and store.events(c.id) == []
    with sqlite3.connect(store.path) as raw:
        owners = {o for (o,) in raw.execute("SELECT DISTINCT conversation_id FROM blobs")}
    assert owners == {other.id}
    assert len(store.messages(other.id)) == 1 and len(store.events(other.id)) == 2


def test_threads_append_concurrently(store: Store) -> None:
    c = store.create_conversation(title="", model="m", executor="repl", workspace="/w")
    per_thread = 40
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(per_thread):
                if i % 10 == 0:
                    store.append_event(c.id, n, plot_events()[0])
                else:
                    store.append_event(c.id, n, {"type": "text", "round": 1, "text": f"{n}:{i}"})
                store.events(c.id, after_seq=10**9)  # readers interleave with the writers
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = store.events(c.id)
    assert len(events) == 8 * per_thread
    assert len({e["seq"] for e in events}) == len(events)
    for n in range(8):  # each thread's events, in its own order
        texts = [e["text"] for e in events if e["turn"] == n and e["type"] == "text"]
        assert texts == [f"{n}:{i}" for i in range(per_thread) if i % 10]
    pngs = [e for e in events if e["type"] == "output"]
    assert len(pngs) == 8 * 4
    assert all(e["output"]["data"]["image/png"] == base64.b64encode(PNG).decode() for e in pngs)


def test_a_version_1_database_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    inline = base64.b64encode(PNG).decode()
    old_event = {"type": "output", "round": 1, "output": {"type": "display", "metadata": {},
                 "data": {"image/png": inline}}}  # fmt: skip
    with sqlite3.connect(path) as raw:  # what codeinterp with schema version 1 wrote
        raw.executescript(MIGRATIONS[0])
        raw.execute(
            "INSERT INTO conversations VALUES ('c1', 'old', 'm', 'repl', '/w', '', "
            "'2024-01-01T00:00:00.000000+00:00', '2024-01-01T00:00:00.000000+00:00')"
        )
        raw.execute(
            "INSERT INTO messages (conversation_id, role, content) VALUES ('c1', 'user', 'hi')"
        )
        raw.execute(
            "INSERT INTO events (conversation_id, turn, type, data) VALUES ('c1', 1, ?, ?)",
            ("output", json.dumps(old_event)),
        )
        raw.execute("PRAGMA user_version=1")
    raw.close()

    store = Store(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw.close()
    assert store.get_conversation("c1") is not None
    assert store.messages("c1") == [Message("user", "hi")]
    (event,) = store.events("c1")  # inline payloads of version 1 still read back
    assert event["output"]["data"]["image/png"] == inline
    store.append_message("c1", Message("user", "again", images=(PNG,)))  # version 2 works
    assert store.messages("c1")[-1].images == (PNG,)
    store.close()
    Store(path).close()  # reopening an up-to-date database changes nothing


def test_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The server and `codeinterp export` may both be first: each has its own connection."""
    errors: list[str] = []

    def open_store(path: Path) -> None:
        try:
            Store(path).close()
        except BaseException:
            errors.append(traceback.format_exc())  # where it failed, should it fail again

    for attempt in range(60):
        path = tmp_path / f"{attempt}.db"
        threads = [threading.Thread(target=open_store, args=(path,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(Exception, match="upgrade codeinterp"):
        Store(path)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from codeinterp.store import Store

    store = Store(Path(sys.argv[1]))
    conversation = store.create_conversation(title="", model="m", executor="e", workspace="/")
    print(conversation.id, flush=True)
    event = {"type": "output", "round": 1, "output": {"type": "display", "metadata": {},
             "data": {"image/png": sys.argv[2]}}}
    turn = 0
    while True:
        turn += 1
        print(store.append_event(conversation.id, turn, event), flush=True)
    """
)


def test_everything_committed_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    png = base64.b64encode(PNG).decode()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), png], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    conversation_id = writer.stdout.readline().strip()
    printed = []
    while len(printed) < 300:
        printed.append(int(writer.stdout.readline()))
    writer.send_signal(signal.SIGKILL)
    rest = writer.stdout.read()  # lines printed before the kill landed count too
    writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    printed += [int(line) for line in rest.split("\n") if line.strip().isdigit()]

    store = Store(path)
    events = store.events(conversation_id)
    stored = {e["seq"] for e in events}
    assert set(printed) <= stored
    assert len(stored) - len(printed) <= 1  # at most the one committed but not yet printed
    assert all(e["output"]["data"]["image/png"] == png for e in events)
