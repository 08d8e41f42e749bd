"""`llamacpp`: a local GGUF model through llama-cpp-python.

The prompt is built with the chat template stored in the GGUF file. Each round's prompt extends
the previous one, and llama.cpp keeps the evaluated tokens in its KV cache: the longest common
prefix is reused, so round k only evaluates its new tokens. `Usage.cached_tokens` reports how
many prompt tokens came from the cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeinterp.errors import ConfigError, DependencyMissing
from codeinterp.models.base import Delta, Message, ToolSpec, Usage

DEFAULT_CONTEXT_TOKENS = 8192
DEFAULT_MAX_TOKENS = 1024


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise DependencyMissing("llama-cpp-python", "local", "running a local GGUF model") from exc
    return llama_cpp


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="ignore")


class LlamaCppModel:
    supports_tools = False
    supports_images = False
    supports_grammar = True
    supports_prefill = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str | None = None,
        n_ctx: int = DEFAULT_CONTEXT_TOKENS,
        n_threads: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"No GGUF model file at {path}. Give the path of a .gguf file.")
        llama_cpp = _import_llama_cpp()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = name or path.stem
        self.max_tokens = max_tokens
        # One thread per core, but leave one core to the executor on small machines.
        threads = n_threads or max(1, (os.cpu_count() or 2) - 1)
        self._llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=verbose
        )
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{path.name} has no chat template; use a chat (instruct) model.")
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(self._llm, self._llm.token_eos()),
            bos_token=_token_text(self._llm, self._llm.token_bos()),
        )
        self._llama_cpp = llama_cpp
        self._lock = threading.Lock()  # one generation at a time per loaded model

    def prompt(self, messages: list[Message]) -> tuple[str, list[str]]:
        """The prompt text the chat template makes of `messages`, and its stop strings."""
        chat: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        response = self._formatter(messages=chat)
        stop = response.stop if isinstance(response.stop, list) else [response.stop]
        return response.prompt, [s for s in stop if s]

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        if tools:
            raise ConfigError(
                f"{self.name} runs through llama.cpp without native tool calls; "
                "use the markdown protocol (`--protocol markdown`)."
            )
        prompt, template_stop = self.prompt(messages)
        prompt += str(options.get("prefill") or "")  # the reply's start, continued by the model
        with self._lock:
            tokens = self._llm.tokenize(prompt.encode("utf-8"), special=True)
            evaluated = self._llm.input_ids[: self._llm.n_tokens].tolist()  # what the cache holds
            cached = self._llm.longest_token_prefix(evaluated, tokens)
            compiled = (
                self._llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
                if grammar
                else None
            )
            chunks = self._llm.create_completion(
                prompt=tokens,
                max_tokens=int(options.get("max_tokens", self.max_tokens)),
                temperature=float(options.get("temperature", 0.0)),
                stop=template_stop + list(stop or []),
                grammar=compiled,
                stream=True,
            )
            finish: str | None = None
            produced = 0
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice.get("text") or ""
                    finish = choice.get("finish_reason") or finish
                    if text:
                        produced += 1
                        # Usage so far on every piece: the loop may stop reading at any point.
                        yield Delta(text=text, usage=Usage(len(tokens), produced, cached))
            finally:
                chunks.close()  # stops generation when the loop has seen enough
            usage = Usage(
                prompt_tokens=len(tokens), completion_tokens=produced, cached_tokens=cached
            )
            yield Delta(finish_reason=finish or "stop", usage=usage)

    def close(self) -> None:
        self._llm.close() if hasattr(self._llm, "close") else None
