"""Capturing a cell's stdout and stderr inside the process that runs it.

- `EmitStream` replaces `sys.stdout` / `sys.stderr`: text is batched (by size, and by time via
  a flusher thread) so a flood of tiny prints costs few messages, yet output still streams.
- `FdCapture` points file descriptors 1 and 2 at pipes read by threads, so output written
  below Python (`os.system`, C libraries, child processes) is captured too, and can be
  drained at the end of a cell so it lands in the right one.

Undecodable bytes become U+FFFD: output must never crash the session.
"""

from __future__ import annotations

import codecs
import io
import os
import threading
from collections.abc import Callable

from codeinterp.outputs import Output, Stream, StreamName

FLUSH_CHARS = 16_384
FLUSH_INTERVAL_S = 0.05


class _BytesToText(io.RawIOBase):
    """`sys.stdout.buffer`: bytes written here are decoded and join the text stream."""

    def __init__(self, stream: EmitStream) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._stream.write(self._decoder.decode(bytes(b)))
        return len(b)


class OutputMux:
    """Batches text of both streams in write order and forwards it, with displays, to `send`.

    One buffer for stdout and stderr keeps their interleaving; a display flushes the text
    before it, so the order a person saw is the order the host receives.
    """

    def __init__(self, send: Callable[[Output], None]) -> None:
        self._send = send
        self._lock = threading.RLock()
        self._parts: list[tuple[StreamName, str]] = []
        self._size = 0

    def write(self, name: StreamName, text: str) -> None:
        with self._lock:
            if self._parts and self._parts[-1][0] == name:
                self._parts[-1] = (name, self._parts[-1][1] + text)
            else:
                self._parts.append((name, text))
            self._size += len(text)
            if self._size >= FLUSH_CHARS:
                self.flush()

    def flush(self) -> None:
        with self._lock:
            parts, self._parts, self._size = self._parts, [], 0
            for name, text in parts:
                self._send(Stream(name, text))

    def emit(self, output: Output) -> None:
        """Send any output (a `CellRunner`'s emit), keeping order with buffered text."""
        with self._lock:
            if isinstance(output, Stream):
                self.write(output.name, output.text)
            else:
                self.flush()
                self._send(output)


class EmitStream(io.TextIOBase):
    """A text stream (`sys.stdout` / `sys.stderr`) writing into an `OutputMux`."""

    def __init__(self, name: StreamName, mux: OutputMux, fd: int | None = None) -> None:
        self.name = name
        self._mux = mux
        self._fd = fd  # the captured descriptor behind this stream, if there is one
        self.buffer = _BytesToText(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("this stream has no file descriptor")
        return self._fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._mux.write(self.name, s)
        return len(s)

    def flush(self) -> None:
        self._mux.flush()


class Flusher:
    """Flushes streams periodically so output appears while a cell is still running."""

    def __init__(self, mux: OutputMux) -> None:
        self._mux = mux
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="codeinterp-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self._mux.flush()

    def stop(self) -> None:
        self._stop.set()


class FdCapture:
    """Redirects a file descriptor (1 or 2) into an `EmitStream` through a pipe and a thread.

    `drain()` writes a numbered marker into the pipe and waits until the reader thread meets
    it. On a loaded machine that wait may give up before the reader runs; its marker then
    arrives during a later drain. Every marker of this capture is therefore cut out of the
    output, whichever drain wrote it, and only the awaited one ends the wait.
    """

    def __init__(self, fd: int, stream: EmitStream) -> None:
        self._fd = fd
        self._stream = stream  # writes go to the mux; .buffer is not used from this thread
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)  # children inherit fd 1/2 and so write into our pipe
        # Markers go through our own (close-on-exec) end: user code may re-point fd 1/2.
        self._marker_fd = write_fd
        self._read_fd = read_fd
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Markers start with a NUL byte and a token of this capture, so output never holds one.
        # (No regex and no `secrets`: each costs a session ~100 KiB of private memory.)
        self._marker_head = f"\0codeinterp-drain-{os.urandom(6).hex()}-".encode()
        self._awaited = 0  # the number of the marker `drain()` waits for
        self._marker_seen = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"codeinterp-fd{fd}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        head = self._marker_head
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            while (start := pending.find(head)) >= 0:
                end = pending.find(b"\0", start + len(head))
                if end < 0:
                    break  # the rest of this marker is still on its way
                self._stream.write(self._decoder.decode(pending[:start]))
                number = pending[start + len(head) : end]
                pending = pending[end + 1 :]
                if number.isdigit() and int(number) >= self._awaited:
                    self._marker_seen.set()
            if start < 0:  # hold back only what may be the beginning of a marker
                cut = pending.rfind(b"\0")
                start = cut if cut >= 0 and head.startswith(pending[cut:]) else len(pending)
            if start:
                self._stream.write(self._decoder.decode(pending[:start]))
                pending = pending[start:]

    def drain(self, timeout_s: float = 2.0) -> bool:
        """Wait until everything written to the fd so far has reached the stream; False if
        that did not happen within `timeout_s` (the rest then arrives with later output)."""
        self._awaited += 1
        self._marker_seen.clear()
        try:
            os.write(self._marker_fd, self._marker_head + b"%d\0" % self._awaited)
        except OSError:
            return False
        return self._marker_seen.wait(timeout_s)
