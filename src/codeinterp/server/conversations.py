"""Conversations: the loop over HTTP, stored as it happens so a restart loses nothing.

A turn stores `{"type": "user"}`, then every loop event the moment it is yielded, and the
model's messages as the loop appends them; so after a crash the store holds the conversation
up to its last completed event, and the `Interpreter`'s history is rebuilt from the messages.
A conversation's session has the conversation's id and a workspace of its own under the data
directory; after a restart, or once it was released for going unused (expiry.py), it is opened
anew on that workspace and a `session_lost` event says so (variables gone, files kept). One turn
at a time per conversation (turns.py).

Everything here blocks (store, sessions, the model): the routes call it in worker threads.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeinterp.agent import Interpreter
from codeinterp.agent.serialize import event_to_dict
from codeinterp.errors import CodeinterpError
from codeinterp.models.base import Message
from codeinterp.server.sessions import SessionEntry, UnknownSession
from codeinterp.server.turns import Live, TurnRunning
from codeinterp.store import Conversation, NotFound

if TYPE_CHECKING:
    from codeinterp.server.runtime import Runtime

log = logging.getLogger("codeinterp.server")
Emit = Callable[[str, dict[str, Any]], None]
DELETE_WAIT_S = 15.0
# `session_state` values we keep in the store: a session was open / a turn was running.
OPEN, RUNNING = "open", "running"


def merge_user_messages(messages: list[Message]) -> list[Message]:
    """Stored messages as the loop had them: consecutive user messages joined.

    The loop joins a new user text to unread results ("results\\n\\ntext") in place; the store
    only appends, so it holds them as two messages, joined again here the same way.
    """
    merged: list[Message] = []
    for message in messages:
        if merged and message.role == "user" and merged[-1].role == "user":
            merged[-1] = Message(role="user", content=f"{merged[-1].content}\n\n{message.content}")
        else:
            merged.append(message)
    return merged


class Conversations:
    """Create, run, interrupt, reset, delete and export conversations."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._live: dict[str, Live] = {}
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------
    def _get(self, conversation_id: str) -> Conversation:
        conversation = self._rt.db().get_conversation(conversation_id)
        if conversation is None:
            raise NotFound(
                f"No conversation {conversation_id!r}; list them with GET /api/conversations "
                "or create one with POST /api/conversations."
            )
        return conversation

    def _live_for(self, conversation_id: str) -> Live:
        with self._lock:
            return self._live.setdefault(conversation_id, Live(conversation_id))

    def _workspace(self, conversation: Conversation) -> Path:
        return (
            Path(conversation.workspace)
            if conversation.workspace
            else self._rt.settings.data_dir / conversation.id
        )

    def describe(self, conversation: Conversation) -> dict[str, Any]:
        with self._lock:
            live = self._live.get(conversation.id)
        return {
            "id": conversation.id,
            "title": conversation.title,
            "session_id": conversation.id,
            "model": conversation.model,
            "executor": conversation.executor,
            "created_at": conversation.created_at,
            "updated_at": conversation.updated_at,
            "running": live is not None and live.running,
        }

    # -- lifecycle ----------------------------------------------------------------------
    def load(self) -> None:
        """At start-up: every stored conversation's session, dormant until needed."""
        for conversation in self._rt.db().list_conversations():
            self._rt.sessions.add_dormant(
                conversation.id,
                conversation.executor,
                self._workspace(conversation),
                conversation.id,
            )

    def reopened(self, entry: SessionEntry) -> None:
        """A dormant conversation session was opened anew: record what was lost, and why."""
        if entry.conversation_id is None:
            return
        store = self._rt.db()
        conversation = self._get(entry.conversation_id)
        detail = None
        if entry.released_idle:
            detail = (
                "This conversation's session went unused for longer than the service's "
                f"--session-idle-timeout ({self._rt.settings.session_idle_timeout_s:g} s), so "
                "it was closed to free its resources: variables and imports are gone; files "
                "in the workspace are kept. A new session runs on the same workspace."
            )
        elif conversation.session_state in (OPEN, RUNNING):
            detail = (
                "The service restarted, so this conversation's session was lost: variables "
                "and imports are gone; files in the workspace are kept. A new session runs "
                "on the same workspace."
            )
            if conversation.session_state == RUNNING:
                detail = "A turn was running when the service stopped; it was cut off. " + detail
        if detail is not None:
            event: dict[str, Any] = {"type": "session_lost", "detail": detail}
            turn = store.last_turn(conversation.id)
            seq = store.append_event(conversation.id, turn, event)
            self._live_for(conversation.id).notices.append({**event, "turn": turn, "seq": seq})
        store.update_conversation(conversation.id, session_state=OPEN)

    def interrupt_all(self) -> None:
        with self._lock:
            lives = list(self._live.values())
        for live in lives:
            live.interrupt()

    # -- the API ------------------------------------------------------------------------
    def create(self, title: str | None) -> dict[str, Any]:
        rt = self._rt
        store = rt.db()
        conversation = store.create_conversation(
            title=title or "Untitled",
            model=rt.settings.model,
            executor=rt.settings.executor,
            workspace="",
        )
        workspace = rt.settings.data_dir / conversation.id
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            store.update_conversation(conversation.id, workspace=str(workspace))
            rt.sessions.create(
                conversation.executor,
                workspace=workspace,
                session_id=conversation.id,
                conversation_id=conversation.id,
            )
        except BaseException:
            store.delete_conversation(conversation.id)
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        return self.describe(store.update_conversation(conversation.id, session_state=OPEN))

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(c) for c in self._rt.db().list_conversations()]

    def get(self, conversation_id: str) -> dict[str, Any]:
        conversation = self._get(conversation_id)
        return {**self.describe(conversation), "events": self._rt.db().events(conversation_id)}

    def begin_turn(self, conversation_id: str) -> Live:
        """Claim the conversation for one turn (409 if one runs); `run_turn` releases it."""
        self._get(conversation_id)
        live = self._live_for(conversation_id)
        if not live.claim():
            raise TurnRunning(conversation_id)
        return live

    def _interpreter(self, live: Live, entry: SessionEntry) -> Interpreter:
        """The conversation's loop on its session (held by the caller), opened if dormant.

        Rebuilt from the stored messages when there is none (after a restart) or when its
        session is not the open one (released as idle, and a new one opened since).
        """
        rt = self._rt
        session, _ = rt.sessions.live(entry)
        if live.interpreter is None or live.interpreter.session is not session:
            interpreter = Interpreter(
                rt.model(),
                session,
                protocol=rt.settings.protocol,
                max_rounds=rt.settings.max_rounds,
                cell_timeout_s=rt.settings.cell_timeout_s,
                installer=rt.settings.installer,
            )
            stored = merge_user_messages(rt.db().messages(live.id))
            interpreter.messages = [interpreter.messages[0], *stored]
            live.interpreter = interpreter
        return live.interpreter

    def run_turn(self, live: Live, text: str, emit: Emit) -> None:
        """One turn, every event stored then emitted; ends with `done` or `error`.

        Runs in a worker thread and releases the turn claimed by `begin_turn`. The session is
        held meanwhile, so it is not released as idle during the turn.
        """
        try:
            with self._rt.sessions.in_use(live.id) as entry:
                self._run_turn(live, entry, text, emit)
        except Exception as exc:
            if not isinstance(exc, CodeinterpError):
                log.exception("conversation %s: the turn failed", live.id)
            emit("error", {"detail": str(exc) or type(exc).__name__})
        finally:
            live.turn_lock.release()

    def _run_turn(self, live: Live, entry: SessionEntry, text: str, emit: Emit) -> None:
        store = self._rt.db()
        interpreter = self._interpreter(live, entry)
        notices, live.notices = live.notices, []
        for notice in notices:
            emit(notice["type"], notice)
        turn = store.last_turn(live.id) + 1
        store.update_conversation(live.id, session_state=RUNNING)
        user = {"type": "user", "text": text}
        emit("user", {**user, "turn": turn, "seq": store.append_event(live.id, turn, user)})
        before, last = len(interpreter.messages), interpreter.messages[-1]
        synced: int | None = None
        for event in live.start_loop(interpreter, text):
            if synced is None:
                synced = self._store_user_message(live, interpreter, before, last)
            synced = self._store_messages(live, interpreter, synced)
            data = event_to_dict(event)
            seq = store.append_event(live.id, turn, data)
            emit(data["type"], {**data, "turn": turn, "seq": seq})
        if synced is not None:
            self._store_messages(live, interpreter, synced)
        store.update_conversation(live.id, session_state=OPEN)
        emit("done", {})

    def _store_user_message(
        self, live: Live, interpreter: Interpreter, before: int, last: Message
    ) -> int:
        """Store the user message as the loop sent it; returns the index stored up to.

        The loop adds to our text (a listing of the workspace's files), and joins it to
        unread results in place ("results\n\ntext"); the store only appends, so a joined
        message is stored as its new part, and `merge_user_messages` joins it again.
        """
        messages = interpreter.messages
        if messages[before - 1] is last:  # appended as a message of its own
            self._rt.db().append_message(live.id, messages[before])
            return before + 1
        joined = messages[before - 1]
        added = joined.content[len(last.content) + 2 :]
        self._rt.db().append_message(live.id, Message(role="user", content=added))
        return before

    def _store_messages(self, live: Live, interpreter: Interpreter, synced: int) -> int:
        """Store the messages the loop appended since index `synced`; returns the new index."""
        for message in interpreter.messages[synced:]:
            self._rt.db().append_message(live.id, message)
        return len(interpreter.messages)

    def interrupt(self, conversation_id: str) -> None:
        self._get(conversation_id)
        with self._lock:
            live = self._live.get(conversation_id)
        if live is not None:
            live.interrupt()

    def reset(self, conversation_id: str) -> dict[str, Any]:
        """History cleared for the model, session restarted, files kept (409 during a turn)."""
        live = self.begin_turn(conversation_id)
        try:
            with self._rt.sessions.in_use(conversation_id) as entry:
                session, opened = self._rt.sessions.live(entry)
                if live.interpreter is not None and live.interpreter.session is session:
                    live.interpreter.reset()
                else:
                    live.interpreter = None  # the next turn builds it from the cleared history
                    if not opened:
                        session.restart()
            self._rt.db().clear_history(conversation_id)
        finally:
            live.turn_lock.release()
        return self.describe(self._get(conversation_id))

    def delete(self, conversation_id: str) -> None:
        """Stop its turn, close its session, forget it, remove its workspace."""
        conversation = self._get(conversation_id)
        live = self._live_for(conversation_id)
        live.interrupt()
        claimed = live.turn_lock.acquire(timeout=DELETE_WAIT_S)
        try:
            try:
                self._rt.sessions.remove(conversation_id, force=True)
            except UnknownSession:
                pass
            self._rt.db().delete_conversation(conversation_id)
            workspace = self._workspace(conversation).resolve()
            if workspace.is_relative_to(self._rt.settings.data_dir.resolve()):
                shutil.rmtree(workspace, ignore_errors=True)
        finally:
            with self._lock:
                self._live.pop(conversation_id, None)
            if claimed:
                live.turn_lock.release()

    def notebook(self, conversation_id: str) -> tuple[str, dict[str, Any]]:
        """(title, nbformat v4 notebook as a dict) of the conversation."""
        from codeinterp.notebook import conversation_notebook

        conversation = self._get(conversation_id)
        events = self._rt.db().events(conversation_id)
        return conversation.title, conversation_notebook(events, title=conversation.title)
