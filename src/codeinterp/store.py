"""Conversations kept in SQLite, so a restart of the service loses nothing (DESIGN §2.7).

What is stored, per conversation:
- `messages`: what the model saw, to rebuild an `Interpreter`'s history after a restart;
- `events`: every loop event in its `event_to_dict` form (plus `{"type": "user"}` and
  `{"type": "reset"}` events), to replay a conversation to a page or export it as a notebook;
- `blobs`: binary payloads (plot PNGs, message images). An event's base64 image is moved out
  into a blob and replaced by `{"blob": ID}`, so events stay small and listing them is cheap;
  `events()` puts the base64 back. Equal payloads of one conversation share a blob (an image is
  in both its `output` event and its `execution` event).

Durability: WAL journal, one transaction committed per append, `synchronous=NORMAL`. A commit
in WAL mode is a `write()` of the WAL frames into the OS page cache before `append_*` returns;
NORMAL skips only the fsync. A process killed with SIGKILL cannot lose what the kernel already
holds, so everything up to the last completed append survives it (tests/test_store.py kills a
writer to show it). Only a power loss or kernel crash may drop the last few commits, and even
then the database stays consistent; FULL would fsync every event for that case alone.

Timestamps are ISO 8601 strings in UTC with microseconds (`2025-01-31T12:00:00.000000+00:00`):
readable in JSON replies and in the sqlite3 shell, and they sort as text.
Thread safety: one connection (`check_same_thread=False`) behind a lock; every method holds it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp.errors import CodeinterpError
from codeinterp.models.base import Message, ToolCall
from codeinterp.outputs import BINARY_MIME_TYPES

# Applied in order; PRAGMA user_version counts how many a database already has. Append new
# steps at the end, never edit a released one.
MIGRATIONS: list[str] = [
    # 1: conversations, the model's messages and the loop's events (images inline in events).
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, model TEXT NOT NULL, executor TEXT NOT NULL,
        workspace TEXT NOT NULL, session_state TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL, content TEXT NOT NULL, tool_calls TEXT NOT NULL DEFAULT '[]',
        tool_call_id TEXT);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        turn INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX events_by_conversation ON events(conversation_id, seq);
    """,
    # 2: binary payloads out of events into blobs (equal ones shared); images of messages.
    """
    CREATE TABLE blobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        mime TEXT NOT NULL, sha256 TEXT NOT NULL, data BLOB NOT NULL);
    CREATE INDEX blobs_by_digest ON blobs(conversation_id, sha256);
    ALTER TABLE messages ADD COLUMN images TEXT NOT NULL DEFAULT '[]';  -- JSON list of blob ids
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class NotFound(CodeinterpError, KeyError):
    """No conversation (or blob) with that id."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


def default_db_path() -> Path:
    """Where `codeinterp serve` and `codeinterp export` look unless given `--db`."""
    return Path.home() / ".local" / "share" / "codeinterp" / "codeinterp.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Conversation:
    id: str  # uuid4 hex
    title: str
    model: str
    executor: str
    workspace: str
    session_state: str  # free text owned by the server, e.g. "running", "lost"
    created_at: str
    updated_at: str


UPDATABLE = frozenset({"title", "model", "executor", "workspace", "session_state"})
_COLUMNS = ", ".join(f.name for f in fields(Conversation))


class Store:
    """A SQLite database of conversations; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: no implicit transactions; `_transaction` opens them explicitly.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")  # another process (export) may hold it
        self._retry_while_locked(self._prepare)

    def _prepare(self) -> None:
        """WAL, pragmas, and the migrations this file lacks; safe to run again after a failure."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
        self._db.execute("PRAGMA foreign_keys=ON")
        version = int(self._query("PRAGMA user_version")[0][0])
        if version > SCHEMA_VERSION:
            raise CodeinterpError(
                f"{self.path} has schema version {version}, newer than this codeinterp knows "
                f"({SCHEMA_VERSION}); upgrade codeinterp or use another --db."
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:  # a step and its version bump commit together, or neither does
                self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if self._query("PRAGMA user_version")[0][0] < number:
                    raise
                # else another process opening the same file applied this step first

    def _retry_while_locked(self, step: Callable[[], None]) -> None:
        """Run `step`, again while SQLite says "locked". While several connections open the same
        new file, SQLite may answer "locked" at once, without waiting on the busy timeout (CI
        saw it at the switch to WAL; SQLite does not promise it happens nowhere else), so the
        whole opening is retried. Each try starts over: a step another connection did is fine."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                time.sleep(0.01)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- conversations ------------------------------------------------------------------------
    def create_conversation(
        self, *, title: str, model: str, executor: str, workspace: str
    ) -> Conversation:
        stamp = now()
        new = Conversation(uuid.uuid4().hex, title, model, executor, workspace, "", stamp, stamp)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO conversations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(getattr(new, f.name) for f in fields(Conversation)),
            )
        return new

    def get_conversation(self, id: str) -> Conversation | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM conversations WHERE id = ?", (id,))
        return Conversation(*rows[0]) if rows else None

    def list_conversations(self) -> list[Conversation]:
        """Newest (by creation) first."""
        sql = f"SELECT {_COLUMNS} FROM conversations ORDER BY created_at DESC, rowid DESC"
        return [Conversation(*row) for row in self._query(sql)]

    def update_conversation(self, id: str, /, **values: str) -> Conversation:
        """Change some of `title`, `model`, `executor`, `workspace`, `session_state`."""
        if unknown := set(values) - UPDATABLE:
            raise ValueError(
                f"Cannot update {', '.join(sorted(unknown))}; "
                f"updatable: {', '.join(sorted(UPDATABLE))}."
            )
        with self._transaction() as db:
            self._touch(db, id)
            for name, value in values.items():
                db.execute(f"UPDATE conversations SET {name} = ? WHERE id = ?", (value, id))
            updated = self.get_conversation(id)
        assert updated is not None
        return updated

    def delete_conversation(self, id: str) -> bool:
        """Delete it with its messages, events and blobs; False if there was none."""
        with self._transaction() as db:
            return db.execute("DELETE FROM conversations WHERE id = ?", (id,)).rowcount > 0

    def clear_history(self, conversation_id: str) -> None:
        """A reset: the model's messages go; the events stay, closed by a `reset` event.

        Blobs stay too: the kept events may share them (reclaimed with the conversation).
        """
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            turn = self.last_turn(conversation_id)
            self._insert_event(db, conversation_id, turn, {"type": "reset"})

    # -- messages -----------------------------------------------------------------------------
    def append_message(self, conversation_id: str, message: Message) -> None:
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
        with self._transaction() as db:
            self._touch(db, conversation_id)  # first: it raises NotFound for an unknown id
            images = [self._put_blob(db, conversation_id, "image/png", i) for i in message.images]
            db.execute(
                "INSERT INTO messages (conversation_id, role, content, tool_calls, tool_call_id,"
                " images) VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, message.role, message.content, json.dumps(calls),
                 message.tool_call_id, json.dumps(images)),
            )  # fmt: skip

    def messages(self, conversation_id: str) -> list[Message]:
        """The model's history, in order, as appended."""
        with self._lock:
            rows = self._query(
                "SELECT role, content, tool_calls, tool_call_id, images FROM messages "
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            )
            return [
                Message(
                    role=role,
                    content=content,
                    tool_calls=tuple(ToolCall(**c) for c in json.loads(calls)),
                    tool_call_id=call_id,
                    images=tuple(self.blob(i)[1] for i in json.loads(images)),
                )
                for role, content, calls, call_id, images in rows
            ]

    # -- events -------------------------------------------------------------------------------
    def append_event(self, conversation_id: str, turn: int, event: dict[str, Any]) -> int:
        """Store one event (an `event_to_dict` dict, or `{"type": "user", "text": ...}`).

        Returns its `seq`: increasing over the whole store in commit order, so "the events of
        a conversation after seq N" resumes a stream. Once this returns, the event is durable.
        """
        with self._transaction() as db:
            return self._insert_event(db, conversation_id, turn, event)

    def events(self, conversation_id: str, *, after_seq: int = 0) -> list[dict[str, Any]]:
        """The events in order, base64 payloads restored, each with `turn` and `seq` added."""
        result = []
        with self._lock:
            for seq, turn, data in self._query(
                "SELECT seq, turn, data FROM events WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq",
                (conversation_id, after_seq),
            ):
                event = json.loads(data)
                for bundle in _bundles(event):
                    for mime, value in bundle.items():
                        if isinstance(value, dict) and isinstance(value.get("blob"), int):
                            payload = self.blob(value["blob"])[1]
                            bundle[mime] = base64.b64encode(payload).decode("ascii")
                result.append({**event, "turn": turn, "seq": seq})
        return result

    def last_turn(self, conversation_id: str) -> int:
        """The highest turn stored (0 if none): a restarted server numbers on from there."""
        sql = "SELECT COALESCE(MAX(turn), 0) FROM events WHERE conversation_id = ?"
        return int(self._query(sql, (conversation_id,))[0][0])

    def blob(self, id: int) -> tuple[str, bytes]:
        """(mime, bytes) of a stored payload."""
        rows = self._query("SELECT mime, data FROM blobs WHERE id = ?", (id,))
        if not rows:
            raise NotFound(f"No blob {id} in {self.path}.")
        return str(rows[0][0]), bytes(rows[0][1])

    # -- internals (callers hold the lock, inside a transaction) -----------------------------
    def _insert_event(
        self, db: sqlite3.Connection, conversation_id: str, turn: int, event: dict[str, Any]
    ) -> int:
        self._touch(db, conversation_id)  # first: it raises NotFound for an unknown id
        event = json.loads(json.dumps(event))  # a deep copy to rewrite; the caller's stays
        event.pop("seq", None)
        event.pop("turn", None)
        for bundle in _bundles(event):
            for mime, value in bundle.items():
                if mime in BINARY_MIME_TYPES and isinstance(value, str):
                    payload = base64.b64decode(value)
                    bundle[mime] = {"blob": self._put_blob(db, conversation_id, mime, payload)}
        cursor = db.execute(
            "INSERT INTO events (conversation_id, turn, type, data) VALUES (?, ?, ?, ?)",
            (conversation_id, turn, str(event.get("type", "")), json.dumps(event)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _put_blob(
        self, db: sqlite3.Connection, conversation_id: str, mime: str, data: bytes
    ) -> int:
        digest = hashlib.sha256(data).hexdigest()
        row = db.execute(
            "SELECT id FROM blobs WHERE conversation_id = ? AND sha256 = ? AND mime = ?",
            (conversation_id, digest, mime),
        ).fetchone()
        if row is not None:
            return int(row[0])
        cursor = db.execute(
            "INSERT INTO blobs (conversation_id, mime, sha256, data) VALUES (?, ?, ?, ?)",
            (conversation_id, mime, digest, data),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _touch(self, db: sqlite3.Connection, conversation_id: str) -> None:
        sql = "UPDATE conversations SET updated_at = ? WHERE id = ?"
        if db.execute(sql, (now(), conversation_id)).rowcount == 0:
            raise NotFound(
                f"No conversation {conversation_id!r}; list them with `codeinterp export --list`."
            )


def _bundles(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The MIME bundles inside an event: its output's, or each of its execution's outputs'."""
    if event.get("type") == "output":
        outputs = [event.get("output")]
    elif event.get("type") == "execution":
        outputs = list((event.get("execution") or {}).get("outputs") or [])
    else:
        return []
    return [o["data"] for o in outputs if isinstance(o, dict) and isinstance(o.get("data"), dict)]
