"""The reaper: releases sessions nobody used for `--session-idle-timeout` seconds.

An API client that forgets to delete its session would otherwise keep an interpreter (a
process, its memory, maybe a remote kernel) until the service stops. The reaper runs for the
app's lifetime and sweeps often relative to the timeout, so a session outlives its timeout by
at most about a tenth of it. What a sweep releases, and what it never touches (a session with
a cell, a file transfer or a turn in progress), is `SessionRegistry.release_idle`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeinterp.server.runtime import Runtime

log = logging.getLogger("codeinterp.server")
MIN_SWEEP_S = 0.05
MAX_SWEEP_S = 30.0


def sweep_interval(idle_timeout_s: float) -> float:
    """A tenth of the timeout, within [MIN_SWEEP_S, MAX_SWEEP_S]."""
    return min(max(idle_timeout_s / 10, MIN_SWEEP_S), MAX_SWEEP_S)


async def _sweep_forever(runtime: Runtime, idle_timeout_s: float) -> None:
    interval = sweep_interval(idle_timeout_s)
    while True:
        await asyncio.sleep(interval)
        try:
            released = await runtime.run(runtime.sessions.release_idle, idle_timeout_s)
        except Exception:  # a failed sweep must not end the reaper; the next one retries
            log.exception("releasing idle sessions failed")
            continue
        for entry in released:
            kind = "dormant" if entry.conversation_id else "closed"
            log.info("session %s unused for %g s: %s", entry.id, idle_timeout_s, kind)


@contextlib.asynccontextmanager
async def idle_reaper(runtime: Runtime) -> AsyncIterator[None]:
    """Run the reaper for the block (none when the timeout is 0: sessions never expire)."""
    idle_timeout_s = runtime.settings.session_idle_timeout_s
    if idle_timeout_s == 0:
        yield
        return
    task = asyncio.ensure_future(_sweep_forever(runtime, idle_timeout_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
