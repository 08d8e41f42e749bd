"""The model contract: who writes the code. One small protocol, many backends.

A backend turns a list of chat `Message`s into a stream of `Delta`s. Everything about prompts,
code extraction and the loop lives above this seam (agent/); a backend only talks to its model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A complete call of a function tool; `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # for role "tool": which call this answers
    images: tuple[bytes, ...] = ()  # PNG attachments, for vision-capable models


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from a cache (e.g. llama.cpp's KV cache)


@dataclass(frozen=True)
class Delta:
    """A piece of the model's reply: text as it streams; tool calls once complete."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None  # "stop", "length", "tool_calls" on the last delta
    usage: Usage | None = None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)  # JSON schema


@runtime_checkable
class Model(Protocol):
    name: str
    supports_tools: bool
    """Native function calls (the `tools` protocol)."""
    supports_images: bool
    """Images in messages are seen (else the loop sends placeholders)."""
    supports_grammar: bool
    """A GBNF grammar can constrain what it writes (llama.cpp)."""
    supports_prefill: bool
    """`stream(..., prefill=TEXT)` makes the reply start with TEXT, which the model continues
    (not repeated in the stream). Free where the prompt is ours to write (llama.cpp)."""

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        """Generate a reply to `messages`, yielding it as it is produced."""
        ...

    def close(self) -> None: ...
