"""`scripted`: a model that replays given replies in order and records every prompt it saw.

A real implementation behind the real seam, for tests and demos: the loop cannot tell it from
a language model, and a test can read exactly what the loop sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from codeinterp.errors import CodeinterpError, ConfigError
from codeinterp.models.base import Delta, Message, ToolCall, ToolSpec, Usage


class ScriptExhausted(CodeinterpError):
    """The scripted model was asked for more replies than it was given."""


class ScriptedModel:
    name = "scripted"
    supports_tools = True
    supports_images = False
    supports_grammar = False

    def __init__(
        self,
        replies: Iterable[str | ToolCall | Delta] | str,
        *,
        chunk_chars: int = 8,
        supports_prefill: bool = False,
    ) -> None:
        """`replies` in order; or, from the command line (`--model scripted:FILE`), the path of
        a JSON file holding a list of reply strings. With `supports_prefill`, a reply that starts
        with the `prefill` it is asked to continue is streamed without it, as a model would."""
        self.supports_prefill = supports_prefill
        if isinstance(replies, str):
            replies = _load(replies)
        self.replies = list(replies)
        self.prompts: list[list[Message]] = []
        self.calls: list[dict[str, Any]] = []
        self.chunk_chars = chunk_chars

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        self.prompts.append(list(messages))
        self.calls.append({"stop": stop, "tools": tools, "grammar": grammar, **options})
        if not self.replies:
            raise ScriptExhausted(
                f"The scripted model has no reply left for prompt {len(self.prompts)}; "
                "give it one more reply."
            )
        reply = self.replies.pop(0)
        if isinstance(reply, Delta):
            yield reply
            return
        if isinstance(reply, ToolCall):
            yield Delta(tool_calls=(reply,), finish_reason="tool_calls")
            return
        prefill = str(options.get("prefill") or "")
        if self.supports_prefill and prefill and reply.startswith(prefill):
            reply = reply[len(prefill) :]
        text, finish = _apply_stop(reply, stop or [])
        for i in range(0, len(text), self.chunk_chars):
            yield Delta(text=text[i : i + self.chunk_chars])
        yield Delta(finish_reason=finish, usage=Usage(completion_tokens=len(text.split())))

    def close(self) -> None:
        pass


def _load(path: str) -> list[str | ToolCall | Delta]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read scripted replies from {path}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, str) for r in data):
        raise ConfigError(f"{path} must hold a JSON list of reply strings.")
    return list(data)


def _apply_stop(text: str, stop: list[str]) -> tuple[str, str]:
    """Cut at the first stop string, as a real server would (the stop text is not returned)."""
    cuts = [i for s in stop if (i := text.find(s)) >= 0]
    if not cuts:
        return text, "stop"
    return text[: min(cuts)], "stop"
