"""The agent loop with the embedded model: per-round latency, KV-cache reuse, the loop's overhead.

Run from the repository root:

    .venv/bin/python -m bench.loop            # 4 tasks x 3, conversations of 5 rounds x 3
    .venv/bin/python -m bench.loop --quick    # a fast smoke run

Everything runs in one process: the embedded model (`qwen-0.5b`, llama.cpp) at temperature 0,
the `sandbox` executor, and `Interpreter.chat()` as every surface drives it. The model and the
session are wrapped in timing proxies (`TimedModel`, `TimedSession`) that pass every call through
unchanged; all times are wall-clock `perf_counter`.

What is measured, and why:

1. Per-round latency on a small task set (TASKS), each task in a fresh conversation and a fresh
   session. For each round: time to first token (round start → first `TextDelta`: what a user
   waits for before anything appears; a round starts when `chat()` is called or when the
   previous round's `RoundDone` arrived), generation time (the model's stream, from the request
   to its last delta), tokens generated, prompt tokens, prompt tokens reused from the KV cache,
   execution time (`CodeBlock` → `ExecutionDone`) and the round's total. Medians per round index.
   Token counts come from the proxy's own probe (the chat template and the tokenizer, and the
   tokens llama.cpp holds evaluated), so they do not depend on what the backend reports; the
   table says how often `RoundDone.usage` was there and agreed, the JSON keeps both.
2. Time to first token with and without KV reuse. A conversation of several user turns is run
   through the real loop until it has made 5 model calls (rounds); each round's TTFT with the
   cache warm from round k-1 is taken there (the normal case). Right after each round's stream
   closes, the KV state is saved, the round's exact messages are replayed after `Llama.reset()`
   (evaluated tokens forgotten: the whole prompt is evaluated again) up to the first token, and
   the state is restored, so round k+1 is still warm. The ratio shows what the append-only
   conversation saves. Both are also taken in this process's CPU time: waiting for a core does
   not count there (sharing memory bandwidth with other work still does). Round 1's warm cache
   holds the system prompt of an earlier conversation (as in a long-running process), primed
   with a different user message before each repeat.
3. The loop's own overhead: per chat of (1), its wall time minus the model's stream time
   (request → last delta, per stream) minus `session.execute` time minus the proxy's probe time.
   What is left is the loop's work (watching the stream, events, the cell thread and queue,
   rendering results) plus closing the model's stream early; those last two are shown apart.

Two explanations are timed on their own: the fixed costs inside every model call (chat template,
tokenizing), and what the loop's GBNF grammars cost per token (the same prompt decoded free and
constrained). One-off costs (loading the model, creating the executor, the first session, the
first chat with a cold KV cache) are reported apart and are not part of any median. The load
average and CPU pressure at start and end are printed and kept: on a shared machine they say how
far the numbers can be trusted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.executors import log, open_to_first_result
from bench.report import (
    BackendRun,
    Metric,
    Row,
    _grid,
    _number,
    _version,
    machine_info,
    quantile,
    render_table,
    write_json,
)
from codeinterp.agent.events import CodeBlock, Event, ExecutionDone, Finished, RoundDone, TextDelta
from codeinterp.agent.interpreter import Interpreter
from codeinterp.agent.protocols import CODE_FIRST_GRAMMAR, MARKDOWN_GRAMMAR
from codeinterp.executors import Executor, Session, SessionState, get_executor
from codeinterp.executors.base import OnOutput
from codeinterp.models import Delta, Message, ToolSpec, Usage, get_model
from codeinterp.models.llamacpp import LlamaCppModel
from codeinterp.outputs import Execution

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "loop.json"

TASKS = [
    "Use Python to compute the sum of the squares of 1..100.",
    "Make a list of the first 10 primes with Python.",
    "Create a pandas DataFrame with columns a=[1,2,3], b=[4,5,6] and print its mean per column.",
    "Use Python to count the vowels in 'the quick brown fox jumps over the lazy dog'.",
]
WARMUP_TASK = "Use Python to print the word hello."
# User turns of the growing conversation (2); turns are sent until enough rounds were made.
CONVERSATION = [
    "Use Python to compute the sum of the squares of 1..100.",
    "Now compute the sum of the cubes of 1..100 the same way.",
    "Make a list of the first 10 primes with Python.",
    "Create a pandas DataFrame with columns a=[1,2,3], b=[4,5,6] and print its mean per column.",
    "Use Python to count the vowels in 'the quick brown fox jumps over the lazy dog'.",
]
PRIME_USER = "Hello."  # round 1's earlier conversation: same system prompt, another user message
FIXED_COST_REPEAT = 20
GRAMMAR_TOKENS = 48  # tokens per stream when timing the grammars
# The loop's grammars: code-first for a turn's first reply, markdown for the others.
GRAMMARS = {"markdown": MARKDOWN_GRAMMAR, "code-first": CODE_FIRST_GRAMMAR}


@dataclass(frozen=True)
class Settings:
    model: str
    executor: str
    tasks: int  # the first N of TASKS
    repeat: int  # passes over the tasks; repeats of the conversation
    kv_rounds: int  # rounds of the growing conversation
    timeout_s: float  # per cell
    json_path: Path


# --- timing proxies ------------------------------------------------------------------------------


@dataclass
class StreamRecord:
    """One `model.stream()` call: when it was asked for, its first and last delta, its tokens."""

    messages: list[Message]  # as sent (a copy), to replay the call
    options: dict[str, Any]
    prompt_tokens: int
    cached_tokens: int  # prompt prefix llama.cpp holds evaluated: reused, not evaluated again
    cached_as_reported: int  # the same prefix taken the way llamacpp.py computes Usage
    probe_s: float  # the proxy's own work before the call (not the model's, not the loop's)
    t_call: float = 0.0
    t_first: float | None = None  # first delta with text
    t_last: float | None = None  # last delta of any kind
    # The same instants in this process's CPU time (all threads): on a shared machine, wall
    # time also counts waiting for a core; CPU time counts only the work.
    cpu_call: float = 0.0
    cpu_first: float | None = None
    cpu_last: float | None = None
    tokens: int = 0  # deltas with text: one per token with llama.cpp
    usage: Usage | None = None  # as the backend reported it, if the stream got that far
    close_s: float = 0.0  # closing the backend's stream (early stop: cleanup in llama.cpp)

    @property
    def model_ttft_s(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_call

    @property
    def model_ttft_cpu_s(self) -> float | None:
        return None if self.cpu_first is None else self.cpu_first - self.cpu_call

    @property
    def gen_s(self) -> float:
        return 0.0 if self.t_last is None else self.t_last - self.t_call

    @property
    def decode_s(self) -> float | None:
        if self.t_first is None or self.t_last is None:
            return None
        return self.t_last - self.t_first

    @property
    def decode_cpu_s(self) -> float | None:
        if self.cpu_first is None or self.cpu_last is None:
            return None
        return self.cpu_last - self.cpu_first

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "cached_as_reported": self.cached_as_reported,
            "tokens": self.tokens,
            "model_ttft_s": self.model_ttft_s,
            "model_ttft_cpu_s": self.model_ttft_cpu_s,
            "gen_s": self.gen_s,
            "decode_s": self.decode_s,
            "decode_cpu_s": self.decode_cpu_s,
            "probe_s": self.probe_s,
            "close_s": self.close_s,
            "usage": asdict(self.usage) if self.usage else None,
        }


def probe_prompt(model: LlamaCppModel, messages: list[Message]) -> tuple[int, int, int]:
    """(prompt tokens, prefix llama.cpp will reuse, that prefix as llamacpp.py reports it).

    llama.cpp reuses the common prefix of the prompt and its *evaluated* tokens
    (`input_ids[:n_tokens]`); llamacpp.py compares with the whole `input_ids` buffer, which
    still holds stale tokens after `Llama.reset()`. Both are kept to show where they differ.
    """
    prompt, _ = model.prompt(messages)
    llm = model._llm
    tokens = llm.tokenize(prompt.encode("utf-8"), special=True)
    evaluated = llm.input_ids[: llm.n_tokens].tolist()
    cached = llm.longest_token_prefix(evaluated, tokens)
    as_reported = llm.longest_token_prefix(llm.input_ids.tolist(), tokens)
    return len(tokens), int(cached), int(as_reported)


class TimedModel:
    """Stands in for a llama.cpp model: every call goes through; each stream is recorded."""

    def __init__(self, model: LlamaCppModel) -> None:
        self.model = model
        self.name = model.name
        self.supports_tools = model.supports_tools
        self.supports_images = model.supports_images
        self.supports_grammar = model.supports_grammar
        self.supports_prefill = model.supports_prefill
        self.records: list[StreamRecord] = []
        # Called once a stream is closed, before the loop goes on (see `measure_kv_reuse`).
        self.after_stream: Callable[[StreamRecord], None] | None = None

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        start = time.perf_counter()
        prompt_tokens, cached, as_reported = probe_prompt(self.model, messages)
        record = StreamRecord(
            messages=list(messages),
            options={"stop": stop, "tools": tools, "grammar": grammar, **options},
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            cached_as_reported=as_reported,
            probe_s=time.perf_counter() - start,
        )
        self.records.append(record)
        record.cpu_call, record.t_call = time.process_time(), time.perf_counter()
        inner = self.model.stream(messages, stop=stop, tools=tools, grammar=grammar, **options)
        return self._timed(inner, record)

    def _timed(self, inner: Iterator[Delta], record: StreamRecord) -> Iterator[Delta]:
        try:
            for delta in inner:
                now, cpu = time.perf_counter(), time.process_time()
                if delta.text:
                    record.tokens += 1
                    if record.t_first is None:
                        record.t_first, record.cpu_first = now, cpu
                record.t_last, record.cpu_last = now, cpu
                record.usage = delta.usage or record.usage
                yield delta
        finally:
            start = time.perf_counter()
            close = getattr(inner, "close", None)
            if close is not None:
                close()
            record.close_s = time.perf_counter() - start
            if self.after_stream is not None:
                self.after_stream(record)

    def close(self) -> None:
        self.model.close()


class TimedSession:
    """Stands in for a session: every call goes through; each `execute` is timed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.id = session.id
        self.workspace = session.workspace
        self.calls: list[float] = []  # seconds per execute

    @property
    def state(self) -> SessionState:
        return self.session.state

    def execute(
        self,
        code: str,
        *,
        timeout_s: float | None = None,
        on_output: OnOutput | None = None,
    ) -> Execution:
        start = time.perf_counter()
        try:
            return self.session.execute(code, timeout_s=timeout_s, on_output=on_output)
        finally:
            self.calls.append(time.perf_counter() - start)

    def interrupt(self) -> None:
        self.session.interrupt()

    def restart(self) -> None:
        self.session.restart()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TimedSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- one chat, and its rounds ---------------------------------------------------------------------


@dataclass
class ChatTrace:
    """One `chat()` call: every event with its arrival time, the streams and executes it made."""

    text: str
    start: float
    end: float
    events: list[tuple[float, Event]]
    streams: list[StreamRecord]
    executes: list[float]

    @property
    def finished(self) -> Finished | None:
        return next((e for _, e in reversed(self.events) if isinstance(e, Finished)), None)


@dataclass(frozen=True)
class RoundSample:
    """One round of one chat (1): all times in seconds; None where the round had no such step."""

    task: str
    round: int
    ttft_s: float | None  # round start → first TextDelta the model wrote (not the prefill)
    model_ttft_s: float | None  # stream request → first delta with text
    gen_s: float  # stream request → last delta
    decode_s: float | None  # first → last delta
    tokens: int
    prompt_tokens: int
    cached_tokens: int
    exec_s: float | None  # CodeBlock → ExecutionDone
    total_s: float  # round start → RoundDone
    usage: dict[str, int] | None  # RoundDone.usage, as reported


def run_chat(interp: Interpreter, model: TimedModel, session: TimedSession, text: str) -> ChatTrace:
    """Drive `interp.chat(text)` to the end, timing each event as it arrives."""
    streams, executes = len(model.records), len(session.calls)
    events: list[tuple[float, Event]] = []
    start = time.perf_counter()
    for event in interp.chat(text):
        events.append((time.perf_counter(), event))
    end = time.perf_counter()
    return ChatTrace(text, start, end, events, model.records[streams:], session.calls[executes:])


def _event_times(trace: ChatTrace) -> dict[str, dict[int, float]]:
    """Per round: when it started, its first text, its code block, execution end and end."""
    times: dict[str, dict[int, float]] = {
        "start": {1: trace.start}, "text": {}, "code": {}, "executed": {}, "done": {}
    }  # fmt: skip
    prefilled: set[int] = set()  # rounds whose opening the loop wrote itself, before the model
    for at, event in trace.events:
        if isinstance(event, TextDelta):
            if event.round not in times["text"] and event.round not in prefilled:
                stream = (
                    trace.streams[event.round - 1] if event.round <= len(trace.streams) else None
                )
                if stream is not None and event.text == stream.options.get("prefill"):
                    prefilled.add(event.round)  # not the model's first token: don't time it
                    continue
            times["text"].setdefault(event.round, at)
        elif isinstance(event, CodeBlock):
            times["code"][event.round] = at
        elif isinstance(event, ExecutionDone):
            times["executed"][event.round] = at
        elif isinstance(event, RoundDone):
            times["done"][event.round] = at
            times["start"][event.round + 1] = at
    return times


def round_samples(trace: ChatTrace) -> list[RoundSample]:
    """The rounds of a chat that completed; round k is the chat's k-th model call (markdown)."""
    times = _event_times(trace)
    usages = {e.round: e.usage for _, e in trace.events if isinstance(e, RoundDone)}
    samples = []
    for round_, done in sorted(times["done"].items()):
        start, stream = times["start"][round_], trace.streams[round_ - 1]
        text, code = times["text"].get(round_), times["code"].get(round_)
        executed = times["executed"].get(round_)
        usage = usages.get(round_)
        samples.append(
            RoundSample(
                task=trace.text,
                round=round_,
                ttft_s=None if text is None else text - start,
                model_ttft_s=stream.model_ttft_s,
                gen_s=stream.gen_s,
                decode_s=stream.decode_s,
                tokens=stream.tokens,
                prompt_tokens=stream.prompt_tokens,
                cached_tokens=stream.cached_tokens,
                exec_s=None if code is None or executed is None else executed - code,
                total_s=done - start,
                usage=asdict(usage) if usage else None,
            )
        )
    return samples


# --- (1) and (3): the task set -------------------------------------------------------------------


@dataclass
class Bench:
    """What every measurement shares: the proxied model, the executor, the settings."""

    model: TimedModel
    executor: Executor
    settings: Settings
    one_off: BackendRun
    failures: list[str] = field(default_factory=list)

    def open_session(self) -> TimedSession:
        """A new session, already answering (open → `1+1`): its start is not in any round."""
        session, elapsed = open_to_first_result(self.executor, self.settings.timeout_s)
        self.one_off.metrics.setdefault("new_session", Metric("time")).samples.append(elapsed)
        return TimedSession(session)

    def chat(
        self, session: TimedSession, text: str, interp: Interpreter | None = None
    ) -> ChatTrace:
        """One chat in `interp` (a fresh conversation if None); failures are noted, not raised."""
        interp = interp or Interpreter(self.model, session, cell_timeout_s=self.settings.timeout_s)
        trace = run_chat(interp, self.model, session, text)
        finished = trace.finished
        if finished is None or finished.stop_reason == "model_error":
            self.failures.append(f"{text!r}: {finished}")
        return trace


def run_tasks(bench: Bench) -> list[ChatTrace]:
    """(1) every task, `repeat` times over, each in a fresh conversation and session."""
    traces = []
    tasks = TASKS[: bench.settings.tasks]
    for rep in range(bench.settings.repeat):
        for i, task in enumerate(tasks, 1):
            log(f"tasks: pass {rep + 1}/{bench.settings.repeat}, task {i}/{len(tasks)}")
            with bench.open_session() as session:
                traces.append(bench.chat(session, task))
    return traces


@dataclass(frozen=True)
class Overhead:
    """(3) one chat's wall time split into the model, the executor and the loop."""

    task: str
    rounds: int
    wall_s: float
    model_s: float  # sum over streams of request → last delta
    exec_s: float  # sum of session.execute
    probe_s: float  # the proxy's own work, taken out
    close_s: float  # closing streams early (inside the overhead)
    cell_thread_s: float  # CodeBlock → ExecutionDone beyond execute (inside the overhead)

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.model_s - self.exec_s - self.probe_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overhead_s": self.overhead_s}


def overhead(trace: ChatTrace) -> Overhead:
    """(3) one chat's split; the cell thread is its CodeBlock → ExecutionDone beyond execute."""
    times = _event_times(trace)
    cells = sum(times["executed"][r] - times["code"][r] for r in times["executed"])
    exec_s = sum(trace.executes)
    return Overhead(
        task=trace.text,
        rounds=len(times["done"]),
        wall_s=trace.end - trace.start,
        model_s=sum(s.gen_s for s in trace.streams),
        exec_s=exec_s,
        probe_s=sum(s.probe_s for s in trace.streams),
        close_s=sum(s.close_s for s in trace.streams),
        cell_thread_s=cells - exec_s,
    )


# --- (2) KV reuse --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvSample:
    """(2) round k of the growing conversation: TTFT with the cache warm and after a reset."""

    round: int
    prompt_tokens: int
    cached_tokens: int  # warm: reused from round k-1
    warm_ttft_s: float | None  # model: request → first token, in the live loop
    warm_loop_ttft_s: float | None  # the loop: round start → first TextDelta
    cold_ttft_s: float | None  # the same messages after Llama.reset()
    warm_ttft_cpu_s: float | None  # the same two in CPU time
    cold_ttft_cpu_s: float | None
    cold_cached_tokens: int  # after the reset: should be 0
    cold_cached_as_reported: int  # what llamacpp.py would report in Usage after the reset


def prime_cache(model: LlamaCppModel, system: Message) -> None:
    """Leave the system prompt in the KV cache with another user message (one token made)."""
    for _ in model.stream([system, Message(role="user", content=PRIME_USER)], max_tokens=1):
        pass


def cold_ttft(model: TimedModel, record: StreamRecord) -> StreamRecord:
    """Replay one recorded call after `Llama.reset()`, stopping at its first token."""
    model.model._llm.reset()
    stream = model.stream(record.messages, **record.options)
    try:
        for delta in stream:
            if delta.text:
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return model.records[-1]


def replay_cold_after_each(bench: Bench, rounds: int) -> list[tuple[StreamRecord, StreamRecord]]:
    """(warm, cold) pairs, filled as the loop runs: after each of the first `rounds` streams,
    the KV state is saved, the same call is replayed cold, and the state is put back.

    Warm and cold runs of a round are thus taken seconds apart (a shared machine's load drifts
    less between them), and the next round still finds the cache as the loop left it. The
    replay happens when the stream is closed: in the round's total, not in any TTFT.
    """
    pairs: list[tuple[StreamRecord, StreamRecord]] = []
    cold_model = TimedModel(bench.model.model)  # its records stay out of the loop's

    def replay(warm: StreamRecord) -> None:
        if len(pairs) >= rounds:
            return
        llm = bench.model.model._llm
        state = llm.save_state()
        try:
            pairs.append((warm, cold_ttft(cold_model, warm)))
        finally:
            llm.load_state(state)

    bench.model.after_stream = replay
    return pairs


def live_conversation(bench: Bench, rounds: int) -> tuple[list[StreamRecord], list[RoundSample]]:
    """User turns through one Interpreter until `rounds` model calls were made."""
    records: list[StreamRecord] = []
    samples: list[RoundSample] = []
    with bench.open_session() as session:
        interp = Interpreter(bench.model, session, cell_timeout_s=bench.settings.timeout_s)
        prime_cache(bench.model.model, interp.messages[0])
        for turn in CONVERSATION:
            trace = bench.chat(session, turn, interp)
            records += trace.streams
            samples += round_samples(trace)
            if len(records) >= rounds:
                break
    return records[:rounds], samples[:rounds]


def measure_kv_reuse(bench: Bench) -> tuple[list[KvSample], list[Message]]:
    """(2) `repeat` live conversations, each round replayed cold right after it.

    Returns the samples and the last round's messages of the first conversation.
    """
    samples: list[KvSample] = []
    messages: list[Message] = []
    for rep in range(bench.settings.repeat):
        log(f"kv reuse: conversation {rep + 1}/{bench.settings.repeat}")
        pairs = replay_cold_after_each(bench, bench.settings.kv_rounds)
        try:
            _, rounds = live_conversation(bench, bench.settings.kv_rounds)
        finally:
            bench.model.after_stream = None
        if len(pairs) < bench.settings.kv_rounds:
            bench.failures.append(f"conversation made only {len(pairs)} rounds")
        for k, ((warm, cold), loop_round) in enumerate(zip(pairs, rounds, strict=False), 1):
            samples.append(
                KvSample(
                    round=k,
                    prompt_tokens=warm.prompt_tokens,
                    cached_tokens=warm.cached_tokens,
                    warm_ttft_s=warm.model_ttft_s,
                    warm_loop_ttft_s=loop_round.ttft_s,
                    cold_ttft_s=cold.model_ttft_s,
                    warm_ttft_cpu_s=warm.model_ttft_cpu_s,
                    cold_ttft_cpu_s=cold.model_ttft_cpu_s,
                    cold_cached_tokens=cold.cached_tokens,
                    cold_cached_as_reported=cold.cached_as_reported,
                )
            )
        if rep == 0 and pairs:
            messages = pairs[-1][0].messages
    return samples, messages


def stream_fixed_costs(model: LlamaCppModel, messages: list[Message]) -> dict[str, list[float]]:
    """Seconds spent in every model call before any evaluation: chat template and tokenizer.

    (`LlamaGrammar.from_string` only stores the text; the grammar is parsed by the sampler and
    costs time per token: see `measure_grammar`.)
    """
    costs: dict[str, list[float]] = {"chat template": [], "tokenize": []}
    for _ in range(FIXED_COST_REPEAT):
        start = time.perf_counter()
        prompt, _ = model.prompt(messages)
        templated = time.perf_counter()
        model._llm.tokenize(prompt.encode("utf-8"), special=True)
        costs["chat template"].append(templated - start)
        costs["tokenize"].append(time.perf_counter() - templated)
    return costs


@dataclass(frozen=True)
class GrammarSample:
    """One stream of GRAMMAR_TOKENS tokens, free or constrained by one of GRAMMARS."""

    mode: str  # "free", or the name of a grammar in GRAMMARS
    ttft_s: float | None  # the prompt is already evaluated: one token's eval + first sample
    tokens: int
    decode_s: float | None
    decode_cpu_s: float | None


def measure_grammar(model: TimedModel, messages: list[Message], repeat: int) -> list[GrammarSample]:
    """What constrained decoding costs: the same prompt, free and with each of GRAMMARS.

    The loop constrains a small model's replies with a GBNF grammar; llama.cpp checks it
    against the candidate tokens at every step, so it shows in both TTFT and tokens/s. Each
    stream runs after the same prompt was evaluated, so only sampling and decoding differ.
    """
    samples = []
    for _ in range(repeat):
        for mode, grammar in [("free", None), *GRAMMARS.items()]:
            for _ in model.model.stream(messages, max_tokens=1):
                pass  # the prompt is now in the KV cache
            stream = model.stream(
                messages, grammar=grammar, temperature=0.0, max_tokens=GRAMMAR_TOKENS
            )
            for _ in stream:
                pass
            record = model.records[-1]
            samples.append(
                GrammarSample(
                    mode, record.model_ttft_s, record.tokens, record.decode_s, record.decode_cpu_s
                )
            )
    return samples


# --- one-off costs -------------------------------------------------------------------------------


def load(settings: Settings, one_off: BackendRun) -> tuple[LlamaCppModel, Executor]:
    """The model and the executor, each timed once (one-off costs)."""
    log(f"loading {settings.model}")
    start = time.perf_counter()
    model = get_model(settings.model)
    one_off.metrics["model_load"] = Metric("time", [time.perf_counter() - start])
    if not isinstance(model, LlamaCppModel):
        raise SystemExit(f"{settings.model} is not a llama.cpp model; this benchmark needs one")
    start = time.perf_counter()
    executor = get_executor(settings.executor)
    one_off.metrics["executor_setup"] = Metric("time", [time.perf_counter() - start])
    return model, executor


def first_uses(bench: Bench) -> None:
    """The first session of the run and a first chat with a cold KV cache: one-off costs."""
    log("first session (cold)")
    session, elapsed = open_to_first_result(bench.executor, bench.settings.timeout_s)
    bench.one_off.metrics["first_session"] = Metric("time", [elapsed])
    with TimedSession(session) as timed:
        log("first chat (cold KV cache)")
        trace = bench.chat(timed, WARMUP_TASK)
    rounds = round_samples(trace)
    metrics = bench.one_off.metrics
    metrics["first_chat"] = Metric("time", [trace.end - trace.start])
    if rounds and rounds[0].ttft_s is not None:
        detail = {"prompt_tokens": rounds[0].prompt_tokens, "cached": rounds[0].cached_tokens}
        metrics["first_round_ttft"] = Metric("time", [rounds[0].ttft_s], detail=detail)


# --- tables --------------------------------------------------------------------------------------

ONE_OFF_ROWS = [
    Row("model_load", "median", "model load (get_model)"),
    Row("executor_setup", "median", "executor setup (get_executor)"),
    Row("first_session", "median", "first session of the run (open → 1+1)"),
    Row("new_session", "median", "later sessions (open → 1+1), median"),
    Row("first_round_ttft", "median", "first round's TTFT, cold KV cache"),
    Row("first_chat", "median", "first chat, whole (cold KV cache)"),
]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return quantile(present, 0.5) if present else None


def _ms(value: float | None) -> str:
    return "-" if value is None else _number(value * 1000)


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _per_round_line(label: str, rounds: list[RoundSample]) -> list[str]:
    rates = [(s.tokens - 1) / s.decode_s for s in rounds if s.decode_s and s.tokens > 1]
    return [
        label,
        str(len(rounds)),
        _ms(_median([s.ttft_s for s in rounds])),
        _ms(_median([s.gen_s for s in rounds])),
        _count(_median([float(s.tokens) for s in rounds])),
        "-" if not rates else f"{quantile(rates, 0.5):.1f}",
        _count(_median([float(s.prompt_tokens) for s in rounds])),
        _count(_median([float(s.cached_tokens) for s in rounds])),
        _ms(_median([s.exec_s for s in rounds])),
        _ms(_median([s.total_s for s in rounds])),
    ]


def per_round_table(samples: list[RoundSample]) -> str:
    """(1) medians per round index, then over all rounds."""
    header = [
        "round", "n", "TTFT ms", "gen ms", "tokens", "tok/s", "prompt tok", "cached tok",
        "exec ms", "round ms",
    ]  # fmt: skip
    indices = sorted({s.round for s in samples})
    lines = [_per_round_line(str(k), [s for s in samples if s.round == k]) for k in indices]
    lines.append(_per_round_line("all", samples))
    return _grid(header, lines) + "\n" + usage_note(samples)


def usage_note(samples: list[RoundSample]) -> str:
    """How often `RoundDone.usage` was reported, and agreed with the probe's counts."""
    reported = [s for s in samples if s.usage is not None]
    agree = sum(
        1
        for s in reported
        if s.usage == {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.tokens,
                       "cached_tokens": s.cached_tokens}
    )  # fmt: skip
    return (
        f"RoundDone.usage: reported in {len(reported)} of {len(samples)} rounds, equal to the "
        f"probe's counts (prompt, generated, cached) in {agree}."
    )


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.1f}x" if num and den else "-"


def kv_table(samples: list[KvSample]) -> str:
    """(2) warm vs cold TTFT per round of the growing conversation, in wall and CPU time."""
    header = [
        "round", "n", "prompt tok", "cached (warm)", "new tok (warm)", "TTFT warm ms",
        "TTFT cold ms", "cold / warm", "CPU warm ms", "CPU cold ms", "CPU cold / warm",
    ]  # fmt: skip
    lines = []
    for k in sorted({s.round for s in samples}):
        mine = [s for s in samples if s.round == k]
        prompt = _median([float(s.prompt_tokens) for s in mine])
        cached = _median([float(s.cached_tokens) for s in mine])
        new = None if prompt is None or cached is None else prompt - cached
        warm, cold = _median([s.warm_ttft_s for s in mine]), _median([s.cold_ttft_s for s in mine])
        cpu_warm = _median([s.warm_ttft_cpu_s for s in mine])
        cpu_cold = _median([s.cold_ttft_cpu_s for s in mine])
        counts = [_count(prompt), _count(cached), _count(new)]
        wall = [_ms(warm), _ms(cold), _ratio(cold, warm)]
        cpu = [_ms(cpu_warm), _ms(cpu_cold), _ratio(cpu_cold, cpu_warm)]
        lines.append([str(k), str(len(mine)), *counts, *wall, *cpu])
    added = [
        s.warm_loop_ttft_s - s.warm_ttft_s
        for s in samples
        if s.warm_loop_ttft_s is not None and s.warm_ttft_s is not None
    ]
    reused = max((s.cold_cached_tokens for s in samples), default=0)
    stale = max((s.cold_cached_as_reported for s in samples), default=0)
    notes = [
        "the loop's TTFT (round start → the model's first TextDelta) adds a median "
        f"{_ms(_median(added))} ms to the model's (request → first token).",
        f"after Llama.reset(): llama.cpp reused at most {reused} prompt tokens; "
        f"llamacpp.py's Usage.cached_tokens would have reported up to {stale}.",
    ]
    return _grid(header, lines) + "\n" + "\n".join(notes)


def grammar_table(samples: list[GrammarSample]) -> str:
    """(extra) TTFT and decoding speed, free vs constrained by each of the loop's grammars."""
    header = [
        f"decoding {GRAMMAR_TOKENS} tokens", "n", "TTFT ms (prompt cached)", "ms/token",
        "CPU ms/token", "tok/s",
    ]  # fmt: skip
    lines = []
    for mode in ["free", *GRAMMARS]:
        mine = [s for s in samples if s.mode == mode]
        step = _median([s.decode_s / (s.tokens - 1) for s in mine if s.decode_s and s.tokens > 1])
        cpu = _median(
            [s.decode_cpu_s / (s.tokens - 1) for s in mine if s.decode_cpu_s and s.tokens > 1]
        )
        rate = "-" if not step else f"{1 / step:.1f}"
        ttft = _ms(_median([s.ttft_s for s in mine]))
        lines.append([mode, str(len(mine)), ttft, _ms(step), _ms(cpu), rate])
    return _grid(header, lines)


def overhead_table(rows: list[Overhead]) -> str:
    """(3) per chat: wall = model + executor + loop overhead."""
    header = [
        "chat", "rounds", "wall ms", "model ms", "exec ms", "overhead ms", "per round ms",
        "% of wall", "stream close ms", "cell thread ms",
    ]  # fmt: skip

    def line(label: str, r: Overhead) -> list[str]:
        return [
            label, str(r.rounds), _ms(r.wall_s), _ms(r.model_s), _ms(r.exec_s), _ms(r.overhead_s),
            _ms(r.overhead_s / max(r.rounds, 1)), f"{100 * r.overhead_s / r.wall_s:.2f}",
            _ms(r.close_s), _ms(r.cell_thread_s),
        ]  # fmt: skip

    lines = [line(f"{i}. {r.task[:32]}", r) for i, r in enumerate(rows, 1)]
    per_round = [r.overhead_s / max(r.rounds, 1) for r in rows]
    share = [100 * r.overhead_s / r.wall_s for r in rows]
    summary = (
        f"overhead per round: median {_ms(quantile(per_round, 0.5))} ms, "
        f"max {_ms(max(per_round))} ms; share of wall time: median {quantile(share, 0.5):.2f}%"
    )
    return _grid(header, lines) + "\n" + summary


def fixed_costs_table(costs: dict[str, list[float]], prompt_tokens: int) -> str:
    header = [f"inside every model call ({prompt_tokens} prompt tokens)", "median ms", "max ms"]
    lines = [[name, _ms(quantile(v, 0.5)), _ms(max(v))] for name, v in costs.items()]
    return _grid(header, lines)


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loop",
        description="Benchmark the agent loop with the embedded model: rounds, KV reuse, overhead.",
    )
    parser.add_argument("--model", default="qwen-0.5b", help="a llama.cpp model spec")
    parser.add_argument("--executor", default="sandbox")
    parser.add_argument("--repeat", type=int, help="passes over the tasks (default 3, quick 1)")
    parser.add_argument("--tasks", type=int, help=f"tasks used (default {len(TASKS)}, quick 2)")
    parser.add_argument("--kv-rounds", type=int, help="conversation rounds (default 5, quick 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per cell")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds (smoke run)")
    args = parser.parse_args(argv)
    return Settings(
        model=args.model,
        executor=args.executor,
        tasks=max(1, min(len(TASKS), args.tasks or (2 if args.quick else len(TASKS)))),
        repeat=max(1, args.repeat or (1 if args.quick else 3)),
        kv_rounds=max(1, args.kv_rounds or (3 if args.quick else 5)),
        timeout_s=args.timeout,
        json_path=args.json,
    )


def contention() -> dict[str, Any]:
    """How busy the machine was: load average and CPU pressure (share of time tasks waited).

    The model is memory-bound on few cores: other work on the machine slows it in wall and in
    CPU time alike, so results taken under load are only comparable with each other.
    """
    doc: dict[str, Any] = {"load_average": list(os.getloadavg())}
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()[1:]
        doc["cpu_pressure_some"] = {k: float(v) for k, v in (x.split("=") for x in some)}
    except (OSError, ValueError, IndexError):
        pass
    return doc


def _describe_load(doc: dict[str, Any]) -> str:
    pressure = doc.get("cpu_pressure_some", {}).get("avg60")
    text = f"load {doc['load_average'][0]:.2f}"
    return text if pressure is None else f"{text}, CPU pressure {pressure:.0f}% (60 s)"


def _model_info(model: LlamaCppModel) -> dict[str, Any]:
    llm = model._llm
    return {
        "name": model.name,
        "path": str(getattr(llm, "model_path", "")),
        "n_ctx": llm.n_ctx(),
        "n_threads": getattr(llm, "n_threads", None),
        "max_tokens": model.max_tokens,
        "llama_cpp_python": _version("llama_cpp_python"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run (1)-(3), print the tables, write the JSON. 0 if every chat finished without error."""
    settings = parse_args(argv)
    machine = machine_info()
    machine["contention_start"] = contention()
    one_off = BackendRun(f"{settings.model}+{settings.executor}")
    model, executor = load(settings, one_off)
    bench = Bench(TimedModel(model), executor, settings, one_off)
    try:
        first_uses(bench)
        traces = run_tasks(bench)
        kv_samples, conversation = measure_kv_reuse(bench)
    finally:
        executor.close()
    final = conversation or [Message(role="system", content=""), Message("user", TASKS[0])]
    costs = stream_fixed_costs(model, final)
    log("grammars: free vs constrained decoding")
    grammar = measure_grammar(bench.model, final[:2], settings.repeat)
    rounds = [s for t in traces for s in round_samples(t)]
    overheads = [overhead(t) for t in traces]
    prompt_tokens = probe_prompt(model, final)[0]

    print("one-off costs (not in any median below)\n")
    print(render_table([one_off], ONE_OFF_ROWS))
    print(f"\n(1) per round, medians over {len(traces)} chats ({settings.tasks} tasks x "
          f"{settings.repeat})\n")  # fmt: skip
    print(per_round_table(rounds))
    print(f"\n(2) time to first token, KV cache warm vs reset, {settings.repeat} conversation(s)\n")
    print(kv_table(kv_samples))
    print("\n" + fixed_costs_table(costs, prompt_tokens))
    print("\n" + grammar_table(grammar))
    print("\n(3) loop overhead = wall - model stream - session.execute (per chat of (1))\n")
    print(overhead_table(overheads))
    for failure in bench.failures:
        print(f"  - FAILED: {failure}")
    info, end_load = _model_info(model), contention()
    print(
        f"\nmachine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, {machine['date']}; model {info['name']}, "
        f"{info['n_threads']} thread(s), llama-cpp-python {info['llama_cpp_python']}\n"
        f"contention: at start {_describe_load(machine['contention_start'])}; "
        f"at end {_describe_load(end_load)}"
    )
    extra = {
        "model": info,
        "rounds": [asdict(s) for s in rounds],
        "streams": [[s.to_dict() for s in t.streams] for t in traces],
        "kv_reuse": [asdict(s) for s in kv_samples],
        "conversation": [{"role": m.role, "content": m.content} for m in conversation],
        "stream_fixed_costs_s": costs,
        "grammar": [asdict(g) for g in grammar],
        "contention_end": end_load,
        "overhead": [o.to_dict() for o in overheads],
        "failures": bench.failures,
    }
    settings_doc = {**asdict(settings), "json_path": str(settings.json_path), "tasks_text": TASKS}
    write_json(settings.json_path, [one_off], settings_doc, machine, benchmark="loop", extra=extra)
    print(f"raw numbers: {settings.json_path}")
    model.close()
    return 1 if bench.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
