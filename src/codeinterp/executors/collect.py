"""Gathers one cell's outputs on the host side, capped in size, and streams them to a callback.

Every backend feeds its outputs through an `OutputCollector`, so the cap, the head + tail
policy and the streaming order are the same everywhere. Stream text beyond the cap is cut from
the middle: the first half of the budget is kept as it arrives, the last half as a rolling
tail, and a marker says how many characters were cut.
"""

from __future__ import annotations

import time
from collections import deque

from codeinterp.executors.base import DEFAULT_MAX_OUTPUT_CHARS, OnOutput
from codeinterp.outputs import Display, Error, Execution, Output, Stream, StreamName

# Rich outputs (plots, tables) kept per cell; more are dropped with a note on stderr.
MAX_DISPLAYS = 100


def cut_marker(n_chars: int) -> str:
    return f"\n…[{n_chars} characters cut]…\n"


class OutputCollector:
    """Accumulates a cell's outputs; `finish()` returns the `Execution`."""

    def __init__(
        self, *, max_chars: int = DEFAULT_MAX_OUTPUT_CHARS, on_output: OnOutput | None = None
    ) -> None:
        self._on_output = on_output
        self._head_left = max_chars - max_chars // 2
        self._tail_budget = max_chars // 2
        self._outputs: list[Output] = []
        self._tail: deque[tuple[StreamName, str]] = deque()
        self._tail_chars = 0
        self._cut_chars = 0
        self._cut_stream: StreamName | None = None
        self._displays = 0
        self._dropped_displays = 0
        self.started = time.perf_counter()

    def stream(self, name: StreamName, text: str) -> None:
        if not text:
            return
        if self._cut_stream is None:
            if len(text) <= self._head_left:
                self._head_left -= len(text)
                self._append(Stream(name, text))
                return
            head, text = text[: self._head_left], text[self._head_left :]
            self._head_left = 0
            if head:
                self._append(Stream(name, head))
            self._cut_stream = name
        self._push_tail(name, text)

    def display(self, output: Display) -> None:
        if self._displays >= MAX_DISPLAYS:
            self._dropped_displays += 1
            return
        self._displays += 1
        self._append(output)

    def _append(self, output: Output) -> None:
        last = self._outputs[-1] if self._outputs else None
        # Merge consecutive chunks of one stream so results stay compact; the callback still
        # sees every chunk as it arrived.
        if isinstance(output, Stream) and isinstance(last, Stream) and last.name == output.name:
            self._outputs[-1] = Stream(last.name, last.text + output.text)
        else:
            self._outputs.append(output)
        if self._on_output is not None:
            self._on_output(output)

    def _push_tail(self, name: StreamName, text: str) -> None:
        self._tail.append((name, text))
        self._tail_chars += len(text)
        while self._tail_chars > self._tail_budget:
            old_name, old = self._tail[0]
            excess = self._tail_chars - self._tail_budget
            if len(old) <= excess:
                self._tail.popleft()
                self._tail_chars -= len(old)
                self._cut_chars += len(old)
            else:
                self._tail[0] = (old_name, old[excess:])
                self._tail_chars -= excess
                self._cut_chars += excess

    def finish(
        self,
        *,
        error: Error | None = None,
        execution_count: int | None = None,
        timed_out: bool = False,
        lost: str | None = None,
    ) -> Execution:
        if self._cut_stream is not None:
            if self._cut_chars:
                self._append(Stream(self._cut_stream, cut_marker(self._cut_chars)))
            for name, text in self._tail:
                self._append(Stream(name, text))
            self._tail.clear()
        if self._dropped_displays:
            self._append(
                Stream("stderr", f"\n…[{self._dropped_displays} more rich outputs dropped]…\n")
            )
        return Execution(
            outputs=self._outputs,
            error=error,
            execution_count=execution_count,
            duration_s=time.perf_counter() - self.started,
            timed_out=timed_out,
            lost=lost,
            truncated_chars=self._cut_chars,
        )
