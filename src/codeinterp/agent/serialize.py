"""Events as JSON-ready dicts: one shape for `codeinterp run --json`, HTTP SSE and the web page."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from codeinterp.agent.events import (
    CodeBlock,
    Event,
    ExecutionDone,
    Finished,
    OutputEvent,
    RoundDone,
    TextDelta,
)
from codeinterp.outputs import output_to_dict


def event_to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, TextDelta):
        return {"type": "text", "round": event.round, "text": event.text}
    if isinstance(event, CodeBlock):
        return {
            "type": "code",
            "round": event.round,
            "code": event.code,
            "language": event.language,
        }
    if isinstance(event, OutputEvent):
        return {"type": "output", "round": event.round, "output": output_to_dict(event.output)}
    if isinstance(event, ExecutionDone):
        return {"type": "execution", "round": event.round, "execution": event.execution.to_dict()}
    if isinstance(event, RoundDone):
        usage = asdict(event.usage) if event.usage is not None else None
        return {"type": "round", "round": event.round, "usage": usage}
    if isinstance(event, Finished):
        return {
            "type": "finished",
            "stop_reason": event.stop_reason,
            "answer": event.answer,
            "rounds": event.rounds,
        }
    raise TypeError(f"not an event: {event!r}")
