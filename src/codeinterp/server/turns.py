"""One turn at a time per conversation, and interrupts that reach the turn they were sent to.

A turn is claimed (`Live.claim`, 409 `TurnRunning` if one runs) before its loop starts
(`Live.start_loop`), and the loop may first have to be built, which takes a while after a
restart. An interrupt in between is recorded as `stopped_turn` and passed on when the loop
starts, so it is never lost; one for a turn that has ended is ignored, so it never stops the
next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from codeinterp.agent import Event, Interpreter
from codeinterp.errors import CodeinterpError


class TurnRunning(CodeinterpError):
    """A turn is already running in this conversation (409)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"A turn is already running in conversation {conversation_id!r}; wait for its "
            f"`done` event, or stop it with POST /api/conversations/{conversation_id}/interrupt."
        )


@dataclass
class Live:
    """What this process holds for one conversation: its loop and its turn lock."""

    id: str
    turn_lock: threading.Lock = field(default_factory=threading.Lock)
    interpreter: Interpreter | None = None
    notices: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0
    """How many turns this process began: tells a turn from the next one."""
    stopped_turn: int = 0
    """The last turn asked to stop."""
    _state: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Orders claims, loop starts and interrupts against each other."""

    @property
    def running(self) -> bool:
        return self.turn_lock.locked()

    def claim(self) -> bool:
        """Take the conversation for a new turn; False if one is running."""
        with self._state:
            if not self.turn_lock.acquire(blocking=False):
                return False
            self.turns += 1
            return True

    def start_loop(self, interpreter: Interpreter, text: str) -> Iterator[Event]:
        """The claimed turn's loop events; stopped at once if it was interrupted meanwhile."""
        with self._state:
            events = interpreter.chat(text)  # from here on, interpreter.interrupt() stops it
            if self.stopped_turn == self.turns:
                interpreter.interrupt()
            return events

    def interrupt(self, turn: int | None = None) -> None:
        """Interrupt the running turn (only if it is still `turn`, when given)."""
        with self._state:
            if not self.running or turn not in (None, self.turns):
                return
            self.stopped_turn = self.turns
            if self.interpreter is not None:
                # Under the lock, so it cannot land on the next turn's loop. If this turn's
                # loop has not started, chat() clears it and start_loop() passes it on again.
                self.interpreter.interrupt()
