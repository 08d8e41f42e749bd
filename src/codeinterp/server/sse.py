"""Server-Sent Events fed by a worker thread.

Cells and model turns block, so they run in worker threads; what they produce crosses into the
event loop through `loop.call_soon_threadsafe` onto an asyncio queue, and leaves as SSE frames
(`event: NAME\\ndata: JSON\\n\\n`). When the client goes away the stream is cancelled and the
feed's `on_disconnect` stops the work (interrupts the cell or the turn); the worker thread then
ends by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

KEEPALIVE_S = 15.0
_END = object()


def frame(event: str, data: Any) -> bytes:
    """One SSE frame; JSON data never holds a raw newline, so one `data:` line suffices."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ThreadFeed:
    """Events emitted from a worker thread, read as SSE frames in the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: the service is shutting down, nobody is listening

    def emit(self, event: str, data: Any) -> None:
        """Send one event (from any thread)."""
        self._put((event, data))

    def end(self) -> None:
        """No more events (from any thread); the stream closes after the queued ones."""
        self._put(_END)

    async def frames(
        self, on_disconnect: Callable[[], None], *, keepalive_s: float = KEEPALIVE_S
    ) -> AsyncIterator[bytes]:
        """The frames, until `end()`. If the client leaves first, `on_disconnect()` is called.

        A comment line every `keepalive_s` of silence keeps proxies from closing the stream
        during a long cell.
        """
        finished = False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), keepalive_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is _END:
                    finished = True
                    return
                assert isinstance(item, tuple)
                yield frame(item[0], item[1])
        finally:
            if not finished:
                on_disconnect()  # must not await: we may be inside a cancelled scope


class EventStream(StreamingResponse):
    """A `text/event-stream` response that notices a client leaving, whatever the server.

    Starlette only watches for `http.disconnect` under ASGI spec versions before 2.4; we always
    do, so a client that closes the connection during a silent cell is noticed at once (the
    body iterator is cancelled and its `finally` runs).
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200) -> None:
        super().__init__(
            content,
            status_code=status_code,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.ensure_future(self.stream_response(send))

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    task.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except asyncio.CancelledError:
            if not watcher.done():  # we were cancelled, not the client leaving
                raise
        except OSError:
            pass  # the client left while we were writing
        finally:
            watcher.cancel()
            await _close(self.body_iterator)


async def _close(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
