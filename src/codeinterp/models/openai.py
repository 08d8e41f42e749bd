"""`openai`: any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, LM Studio, llama.cpp server)
through the official `openai` package, streaming, with native tool calls.

What real servers do, and how we cope:
- llama.cpp's server rejects (HTTP 500) an assistant message whose `content` is null next to
  `tool_calls`: we always send a string.
- Tool-call arguments stream in pieces keyed by `index`; a call is complete only at the end.
- llama.cpp's server (llama-cpp-python 0.3, chatml-function-calling) answers a *streamed*
  request with tools and `tool_choice: "auto"` with an empty stream, while the same request
  unstreamed works (and "required" is an HTTP 500): when a streamed reply with tools comes back
  empty, we ask once more without streaming.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from codeinterp.errors import DependencyMissing
from codeinterp.models.base import Delta, Message, ToolCall, ToolSpec, Usage


def _client(base_url: str | None, api_key: str | None, timeout_s: float) -> Any:
    try:
        import openai
    except ImportError as exc:
        raise DependencyMissing("openai", "openai", "an OpenAI-compatible model") from exc
    # A local server needs no key, but the client insists on one.
    return openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s)


def to_wire(message: Message, *, images: bool) -> dict[str, Any]:
    """A chat message as the OpenAI API expects it."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.images and images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        for png in message.images:
            url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        wire["content"] = parts
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


class OpenAIModel:
    supports_grammar = False
    supports_prefill = False

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        vision: bool = False,
        tools: bool = True,
        timeout_s: float = 600.0,
        max_tokens: int | None = None,
    ) -> None:
        self.name = f"openai:{model}"
        self.model = model
        self.supports_images = vision
        self.supports_tools = tools
        self.max_tokens = max_tokens
        self._client = _client(base_url, api_key, timeout_s)

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [to_wire(m, images=self.supports_images) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": float(options.get("temperature", 0.0)),
        }
        if stop:
            request["stop"] = stop
        if self.max_tokens:
            request["max_tokens"] = self.max_tokens
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
            if "tool_choice" in options:
                request["tool_choice"] = options["tool_choice"]
        stream = self._client.chat.completions.create(**request)
        received = False
        calls: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage: Usage | None = None
        try:
            for chunk in stream:
                if chunk.usage is not None:
                    cached = getattr(chunk.usage, "prompt_tokens_details", None)
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens or 0,
                        completion_tokens=chunk.usage.completion_tokens or 0,
                        cached_tokens=getattr(cached, "cached_tokens", 0) or 0,
                    )
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                delta = choice.delta
                received = received or bool(delta.content or delta.tool_calls)
                for piece in delta.tool_calls or []:
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    if piece.function is not None:
                        call["name"] = piece.function.name or call["name"]
                        call["arguments"] += piece.function.arguments or ""
                if delta.content:
                    yield Delta(text=delta.content)
        finally:
            stream.close()
        if not received and tools:
            yield from self._unstreamed(request)
            return
        complete = tuple(
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in sorted(calls.items())
        )
        yield Delta(tool_calls=complete, finish_reason=finish or "stop", usage=usage)

    def _unstreamed(self, request: dict[str, Any]) -> Iterator[Delta]:
        request = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
        reply = self._client.chat.completions.create(**request)
        choice = reply.choices[0]
        if choice.message.content:
            yield Delta(text=choice.message.content)
        calls = tuple(
            ToolCall(id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments)
            for i, c in enumerate(choice.message.tool_calls or [])
        )
        usage = None
        if reply.usage is not None:
            usage = Usage(reply.usage.prompt_tokens or 0, reply.usage.completion_tokens or 0)
        yield Delta(tool_calls=calls, finish_reason=choice.finish_reason or "stop", usage=usage)

    def close(self) -> None:
        self._client.close()
