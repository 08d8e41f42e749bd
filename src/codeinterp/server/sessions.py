"""The service's sessions: which executor session an API id means, and its workspace.

An API session id is stable even when the interpreter behind it is not: a conversation's
session keeps its id (the conversation's id) across service restarts, and after a restart it
is *dormant* — its workspace is known, its interpreter was lost — until something needs it, when
a new session is opened on the same workspace. Files can be listed and fetched meanwhile,
because they only need the workspace.

A session nobody uses is released after `--session-idle-timeout` (`release_idle`, called by
the reaper in expiry.py): a plain one is closed and forgotten, a conversation's goes dormant as
after a restart. Whatever uses a session holds it (`hold`/`release`, or `in_use`) so that it is
never released meanwhile; its idle time starts when the last use ends.

Every method that opens or closes a session blocks: callers run them in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeinterp.errors import CodeinterpError
from codeinterp.executors.base import Session, SessionState
from codeinterp.store import now

log = logging.getLogger("codeinterp.server")
OpenSession = Callable[[str, Path | None], Session]
"""(executor name, workspace or None for a temporary one) -> a new session."""


class UnknownSession(CodeinterpError, LookupError):
    """No session with that id (404)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"No session {session_id!r}: it was deleted, it expired after going unused for "
            "longer than the service's --session-idle-timeout, or the service restarted "
            "(conversations' sessions are kept through both). List them with GET "
            "/api/sessions, or create one with POST /api/sessions; to keep idle sessions "
            "longer, restart `codeinterp serve` with a larger --session-idle-timeout "
            "(0: never expire)."
        )


class OwnedByConversation(CodeinterpError):
    """The session belongs to a conversation and cannot be deleted on its own (409)."""


@dataclass
class SessionEntry:
    """One API session: its executor session (None while dormant) and where its files are."""

    id: str
    executor: str
    workspace: Path
    created_at: str
    timeout_s: float | None = None
    conversation_id: str | None = None
    session: Session | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    last_used: float = field(default_factory=time.monotonic)
    """When the last use ended (time.monotonic()); idle time counts from here."""
    users: int = 0
    """Uses in progress (cells, file transfers, turns): while any, never released as idle."""
    released_idle: bool = False
    """Dormant because it went unused (not because the service restarted)."""

    @property
    def state(self) -> str:
        """The session's state; "dead" while dormant (the next use opens a new one)."""
        return SessionState.DEAD.value if self.session is None else self.session.state.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "executor": self.executor,
            "state": self.state,
            "created_at": self.created_at,
            "timeout_s": self.timeout_s,
            "conversation_id": self.conversation_id,
        }


class SessionRegistry:
    """API session ids -> entries; safe to use from many threads."""

    def __init__(self, open_session: OpenSession) -> None:
        self._open = open_session
        self.on_reopen: Callable[[SessionEntry], None] | None = None
        """Called (in the opening thread) when a dormant session is opened anew."""
        self._entries: dict[str, SessionEntry] = {}
        self._lock = threading.Lock()

    def create(
        self,
        executor: str,
        *,
        timeout_s: float | None = None,
        workspace: Path | None = None,
        session_id: str | None = None,
        conversation_id: str | None = None,
    ) -> SessionEntry:
        """Open a session now (blocks). Without `workspace`, a temporary one, removed with it."""
        session = self._open(executor, workspace)
        entry = SessionEntry(
            id=session_id or uuid.uuid4().hex[:12],
            executor=executor,
            workspace=session.workspace,
            created_at=now(),
            timeout_s=timeout_s,
            conversation_id=conversation_id,
            session=session,
        )
        with self._lock:
            self._entries[entry.id] = entry
        return entry

    def add_dormant(
        self, session_id: str, executor: str, workspace: Path, conversation_id: str
    ) -> SessionEntry:
        """A conversation's session after a restart: files reachable, interpreter not opened."""
        entry = SessionEntry(
            id=session_id,
            executor=executor,
            workspace=workspace,
            created_at=now(),
            conversation_id=conversation_id,
        )
        with self._lock:
            self._entries[entry.id] = entry
        return entry

    def get(self, session_id: str) -> SessionEntry:
        with self._lock:
            entry = self._entries.get(session_id)
        if entry is None:
            raise UnknownSession(session_id)
        return entry

    def list(self) -> list[SessionEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.created_at)

    def hold(self, session_id: str) -> SessionEntry:
        """The entry, kept from being released as idle until `release(entry)`."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                raise UnknownSession(session_id)
            entry.users += 1
            return entry

    def release(self, entry: SessionEntry) -> None:
        """End one use of a held entry; its idle time starts now."""
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()

    @contextmanager
    def in_use(self, session_id: str) -> Iterator[SessionEntry]:
        """The entry, held for the block (no blocking: usable in the event loop too)."""
        entry = self.hold(session_id)
        try:
            yield entry
        finally:
            self.release(entry)

    def release_idle(self, idle_s: float) -> tuple[SessionEntry, ...]:
        """Release every open session unused for `idle_s` seconds (blocks while closing).

        A plain session is forgotten (its id then answers 404) and closed; a conversation's
        is closed and its entry stays, dormant, for the next use to open a new session on the
        same workspace. Held entries are skipped: the check and the release happen under the
        registry's lock, which `hold` takes too, so no use can begin in between.
        """
        now = time.monotonic()
        released: list[tuple[SessionEntry, Session]] = []
        with self._lock:
            for entry in list(self._entries.values()):
                session = entry.session
                if session is None or entry.users or now - entry.last_used < idle_s:
                    continue
                entry.session = None
                if entry.conversation_id is None:
                    del self._entries[entry.id]
                else:
                    entry.released_idle = True
                released.append((entry, session))
        for entry, session in released:
            try:
                session.close()
            except Exception:  # the others still need closing
                log.exception("closing idle session %s failed", entry.id)
        return tuple(entry for entry, _ in released)

    @staticmethod
    def open_now(entry: SessionEntry) -> Session | None:
        """The entry's session if it is open (no blocking: callers skip a thread hop)."""
        session = entry.session
        if session is None or session.state is SessionState.CLOSED:
            return None
        return session

    def live(self, entry: SessionEntry) -> tuple[Session, bool]:
        """The entry's session, opening a new one on its workspace if dormant (blocks).

        Returns (session, True if it was opened just now). The caller holds the entry (`hold`),
        so that the session is not released as idle while it is being used.
        """
        with entry.lock:
            if entry.session is not None and entry.session.state is not SessionState.CLOSED:
                return entry.session, False
            entry.workspace.mkdir(parents=True, exist_ok=True)
            entry.session = self._open(entry.executor, entry.workspace)
            session = entry.session
        if self.on_reopen is not None:
            self.on_reopen(entry)
        entry.released_idle = False
        return session, True

    def remove(self, session_id: str, *, force: bool = False) -> SessionEntry:
        """Forget the session and close it (blocks). A conversation's needs `force`."""
        entry = self.get(session_id)
        if entry.conversation_id is not None and not force:
            raise OwnedByConversation(
                f"Session {session_id!r} belongs to conversation {entry.conversation_id!r}; "
                "delete the conversation instead (DELETE /api/conversations/ID), or reset it."
            )
        with self._lock:
            self._entries.pop(session_id, None)
        with entry.lock:
            if entry.session is not None:
                entry.session.close()
        return entry

    def close_all(self) -> None:
        """Close every session (at shutdown); interrupts whatever cells were running."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            session = entry.session
            if session is not None:
                session.interrupt()
                session.close()
