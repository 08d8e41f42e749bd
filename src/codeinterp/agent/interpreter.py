"""The loop: the model writes code, the code runs at once, the results go back, round after round.

`Interpreter.chat(text)` yields events (events.py) that every surface consumes. The conversation
only ever grows (nothing already sent is rewritten), so a local model can reuse its KV cache:
round k costs only its new tokens.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, Literal

from codeinterp.agent.context import workspace_listing
from codeinterp.agent.events import (
    CodeBlock,
    Event,
    ExecutionDone,
    Finished,
    OutputEvent,
    RoundDone,
    StopReason,
    TextDelta,
)
from codeinterp.agent.packages import PackageInstaller
from codeinterp.agent.prompts import default_system_prompt
from codeinterp.agent.protocols import (
    CODE_FIRST_GRAMMAR,
    CODE_OPENING,
    MARKDOWN_GRAMMAR,
    PYTHON_TOOL,
    CodeWatcher,
    results_message,
    tool_code,
)
from codeinterp.executors.base import Session
from codeinterp.models.base import Message, Model, ToolCall, Usage
from codeinterp.outputs import Execution
from codeinterp.render import render_for_model

Protocol = Literal["markdown", "tools"]
Step = tuple[StopReason | None, str]  # (why the turn ended, or None to go on; latest prose)
DEFAULT_MAX_ROUNDS = 6
ERROR_HINT = "The code failed. Write the corrected code in one block and run it again."


class _Interrupted(Exception):
    pass


class Interpreter:
    """Runs a conversation between a model and a session."""

    def __init__(
        self,
        model: Model,
        session: Session,
        *,
        protocol: Protocol = "markdown",
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        system_prompt: str | None = None,
        result_max_chars: int = 4000,
        cell_timeout_s: float | None = None,
        constrain: bool | None = None,
        temperature: float = 0.0,
        model_options: dict[str, Any] | None = None,
        installer: PackageInstaller | None = None,
        show_files: bool = False,
        error_hint: bool = False,
        code_first: bool = True,
        fix_first: bool = True,
        prefill: bool | None = None,
    ) -> None:
        self.model = model
        self.session = session
        self.protocol: Protocol = protocol
        self.max_rounds = max_rounds
        self.result_max_chars = result_max_chars
        self.cell_timeout_s = cell_timeout_s
        self.temperature = temperature
        self.model_options = dict(model_options or {})  # passed to every model.stream()
        self.installer = installer  # installs allowed missing packages (off by default)
        self.show_files = show_files  # tell the model which files the workspace holds
        self.error_hint = error_hint  # after an error, ask for fixed code, not an explanation
        self.code_first = code_first  # each turn's first reply opens with code (prefill/grammar)
        self.fix_first = fix_first  # so does a reply after a failed cell (prefill/grammar)
        # Code first / fix first by writing the reply's opening fence for the model (free),
        # rather than by a grammar (which doubles llama.cpp's time per token).
        model_prefills = getattr(model, "supports_prefill", False)
        self.prefill = model_prefills if prefill is None else prefill and model_prefills
        # A grammar only where prefill cannot force code: with it, the 0.5B model solved the
        # same tasks, and generation is slower (bench/eval_variants.py, README "Evaluation").
        if constrain is None:
            constrain = model.supports_grammar and not self.prefill
        self.constrain = constrain
        self._last_cell_failed = False
        prompt = default_system_prompt(protocol) if system_prompt is None else system_prompt
        self.messages: list[Message] = [Message(role="system", content=prompt)]
        self._interrupted = threading.Event()
        self._running_cell = threading.Event()

    def interrupt(self) -> None:
        """Stop the current turn: generation stops, a running cell is interrupted."""
        self._interrupted.set()
        if self._running_cell.is_set():
            self.session.interrupt()

    def reset(self) -> None:
        """Forget the conversation and restart the session (workspace files are kept)."""
        self.messages = self.messages[:1]
        self.session.restart()

    def chat(self, text: str) -> Iterator[Event]:
        """One user turn: rounds of generation and execution until the model answers.

        An `interrupt()` from the moment this is called stops the turn, even one that comes
        before the first event is asked for; one that came before belongs to an earlier turn.
        """
        self._interrupted.clear()  # here, not in the generator: that only runs when iterated
        return self._turn(text)

    def _turn(self, text: str) -> Iterator[Event]:
        if self.show_files:
            listing = workspace_listing(self.session.workspace)
            if listing:
                text = f"{text}\n\n{listing}"
        last = self.messages[-1]
        if last.role == "user":
            # The previous turn stopped (round limit, interrupt) after results the model never
            # read: join them with this text, so roles still alternate as chat templates need.
            self.messages[-1] = Message(role="user", content=f"{last.content}\n\n{text}")
        else:
            self.messages.append(Message(role="user", content=text))
        answer = ""
        self._last_cell_failed = False
        for round_ in range(1, self.max_rounds + 1):
            if self._interrupted.is_set():  # stopped before this round: do not ask the model
                yield Finished("interrupted", answer, round_)
                return
            try:
                if self.protocol == "tools":
                    step = yield from self._tools_round(round_)
                else:
                    step = yield from self._markdown_round(round_)
            except _Interrupted:
                yield Finished("interrupted", answer, round_)
                return
            except Exception as exc:  # the model's failure is an event, not a crash
                yield Finished("model_error", f"{type(exc).__name__}: {exc}", round_)
                return
            finished, answer = step
            if finished is not None:
                yield Finished(finished, answer, round_)
                return
        yield Finished("max_rounds", answer, self.max_rounds)

    # -- markdown protocol ----------------------------------------------------------------
    def _markdown_round(self, round_: int) -> Generator[Event, None, Step]:
        watcher = CodeWatcher()
        usage: Usage | None = None
        grammar = MARKDOWN_GRAMMAR if self.constrain else None
        options = dict(self.model_options)
        code_now = (self.code_first and round_ == 1) or (self.fix_first and self._last_cell_failed)
        if code_now and self.prefill:
            grammar = None  # the markdown grammar cannot start inside a block; none is needed
            options["prefill"] = CODE_OPENING
            watcher.feed(CODE_OPENING)
            yield TextDelta(CODE_OPENING, round_)
        elif code_now and self.constrain:
            grammar = CODE_FIRST_GRAMMAR
        stream = self.model.stream(
            self.messages, grammar=grammar, temperature=self.temperature, **options
        )
        try:
            for delta in stream:
                if self._interrupted.is_set():
                    raise _Interrupted
                usage = delta.usage or usage
                if delta.text:
                    before = len(watcher.text)
                    done = watcher.feed(delta.text)
                    shown = watcher.text[before:]
                    if shown:
                        yield TextDelta(shown, round_)
                    if done:
                        break  # the block is closed: the model must not write its own results
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops generation early
        watcher.finish()
        self.messages.append(Message(role="assistant", content=watcher.text))
        if watcher.code is None or not watcher.code.strip():
            yield RoundDone(round_, usage)
            return "answered", watcher.prose
        execution = yield from self._run(watcher.code, round_)
        self._last_cell_failed = bool(execution.error or execution.lost or execution.timed_out)
        rendered, note = self._render(execution)
        images = tuple(execution.images()) if self.model.supports_images else ()
        self.messages.append(results_message(rendered, images, note))
        yield RoundDone(round_, usage)
        if self._interrupted.is_set():
            raise _Interrupted
        return None, watcher.prose

    # -- tools protocol -------------------------------------------------------------------
    def _tools_round(self, round_: int) -> Generator[Event, None, Step]:
        text = ""
        calls: list[ToolCall] = []
        usage: Usage | None = None
        for delta in self.model.stream(
            self.messages, tools=[PYTHON_TOOL], temperature=self.temperature, **self.model_options
        ):
            if self._interrupted.is_set():
                raise _Interrupted
            usage = delta.usage or usage
            if delta.text:
                text += delta.text
                yield TextDelta(delta.text, round_)
            calls.extend(delta.tool_calls)
        self.messages.append(Message(role="assistant", content=text, tool_calls=tuple(calls)))
        if not calls:
            yield RoundDone(round_, usage)
            return "answered", text.strip()
        for call in calls:
            code = tool_code(call)
            if code is None:
                content = f"Unknown tool {call.name!r}: the only tool is `python` with `code`."
            else:
                execution = yield from self._run(code, round_)
                content = "\n".join(part for part in self._render(execution) if part)
            self.messages.append(Message(role="tool", content=content, tool_call_id=call.id))
        yield RoundDone(round_, usage)
        if self._interrupted.is_set():
            raise _Interrupted
        return None, text.strip()

    def _render(self, execution: Execution) -> tuple[str, str]:
        """The result as the model reads it, and a note for it (a package installed, a hint)."""
        rendered = render_for_model(execution, max_chars=self.result_max_chars)
        note = self.installer.handle(self.session, execution) if self.installer else None
        if note is None and self.error_hint and (execution.error or execution.lost):
            note = ERROR_HINT
        return rendered, note or ""

    # -- running code ---------------------------------------------------------------------
    def _run(self, code: str, round_: int) -> Generator[Event, None, Execution]:
        """Execute `code`, yielding its outputs as they stream; returns the `Execution`."""
        yield CodeBlock(code, round_)
        events: queue.Queue[OutputEvent | Execution | BaseException] = queue.Queue()

        def work() -> None:
            try:
                result = self.session.execute(
                    code,
                    timeout_s=self.cell_timeout_s,
                    on_output=lambda o: events.put(OutputEvent(o, round_)),
                )
                events.put(result)
            except BaseException as exc:  # infrastructure failure: re-raised in our thread
                events.put(exc)

        self._running_cell.set()
        if self._interrupted.is_set():
            self._running_cell.clear()
            raise _Interrupted
        worker = threading.Thread(target=work, name="codeinterp-cell", daemon=True)
        worker.start()
        try:
            while True:
                item = events.get()
                if isinstance(item, OutputEvent):
                    yield item
                elif isinstance(item, BaseException):
                    raise item
                else:
                    execution: Execution = item
                    break
        finally:
            self._running_cell.clear()
            worker.join()
        yield ExecutionDone(execution, round_)
        return execution


def final_answer(events: list[Event]) -> Finished | None:
    return next((e for e in reversed(events) if isinstance(e, Finished)), None)


__all__ = ["Interpreter", "StopReason", "final_answer"]
