"""`hf`: a local Hugging Face model through transformers (the seed's path: Llama, ChatGLM,
CodeGeeX2-style chat models), with the tokenizer's own chat template.

Remote code runs only when asked (`trust_remote_code=True`); 4- or 8-bit loading only when a
GPU and bitsandbytes are present. Weights are read from a local folder or the local Hugging Face
cache: nothing is downloaded unless the caller allows it (`local_files_only=False`).

Generation runs in a worker thread and streams through a `TextIteratorStreamer`. The worker is
always joined: a stop string, or the caller closing the stream, stops generation at the next
token, and an exception in the worker is raised again in `stream()`, never left as a hang.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codeinterp.errors import ConfigError, DependencyMissing
from codeinterp.models.base import Delta, Message, ToolSpec, Usage

_POLL_S = 0.1  # how often a waiting stream checks that its worker is still alive
# Sampling settings at values that change nothing, for greedy decoding: an instruct model's own
# (temperature 0.7, top_p 0.8, ...) would make every greedy call warn, and `None` is filled in
# again from the model's settings by transformers 5.
_NEUTRAL_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "typical_p": 1.0, "min_p": None}


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing("transformers and torch", "hf", "a Hugging Face model") from exc
    return torch, transformers


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") > 1


class StopCutter:
    """Cuts streamed text at the first stop string, even one split across chunks: text that
    could still begin a stop string is held back until the next chunk decides."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in stops or [] if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to show now; after a stop string, `stopped` is set."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [i for s in self.stops if (i := self.pending.find(s)) >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = 0
        for k in range(min(len(self.pending), max((len(s) for s in self.stops), default=1) - 1)):
            tail = self.pending[len(self.pending) - k - 1 :]
            if any(s.startswith(tail) for s in self.stops):
                hold = k + 1
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        """What is held back, once the text is complete."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class TransformersModel:
    supports_tools = False
    supports_images = False
    supports_grammar = False
    supports_prefill = False

    def __init__(
        self,
        model: str,
        *,
        trust_remote_code: bool = False,
        quantize: int | None = None,
        local_files_only: bool = True,
        max_tokens: int = 1024,
        chat_template: str | None = None,
    ) -> None:
        torch, transformers = _import()
        self.name = f"hf:{model}"
        self.max_tokens = max_tokens
        self._torch = torch
        self._transformers = transformers
        folder = Path(model).expanduser()
        if folder.is_dir():
            model = str(folder)
        elif _looks_like_path(model):
            raise ConfigError(
                f"No model folder at {model}. Give a folder that holds a Hugging Face model "
                "(config.json, weights, tokenizer files)."
            )
        loading: dict[str, Any] = {
            "trust_remote_code": trust_remote_code,
            "local_files_only": local_files_only,
        }
        quantizing: dict[str, Any] = {}
        if quantize is not None:
            if quantize not in (4, 8):
                raise ConfigError("quantize must be 4 or 8 (bits)")
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"{quantize}-bit loading (bitsandbytes) needs a CUDA GPU, and this machine "
                    "has none; drop `quantize` to load the full model on the CPU."
                )
            quantizing["quantization_config"] = transformers.BitsAndBytesConfig(
                **{f"load_in_{quantize}bit": True}
            )
            quantizing["device_map"] = "auto"
        with _loading_errors(model, local_files_only):
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(model, **loading)
        if chat_template:
            self._tokenizer.chat_template = chat_template
        if not getattr(self._tokenizer, "chat_template", None):
            raise ConfigError(
                f"{model} has no chat template (tokenizer_config.json or chat_template.jinja); "
                "use a chat (instruct) model, or give one with `chat_template=`."
            )
        with _loading_errors(model, local_files_only):
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                model, **loading, **quantizing
            )
        self._model.eval()
        self._stop_ids = self._eos_ids()

    # -- prompts ----------------------------------------------------------------------
    def prompt(self, messages: list[Message]) -> str:
        """The prompt text the chat template makes of `messages` (images are dropped)."""
        chat = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self._render(chat)
        except Exception as exc:
            # Some templates (Gemma's, Mistral's) refuse a system turn: fold it into the first
            # user turn, as those models are instructed.
            if not chat or chat[0]["role"] != "system" or "TemplateError" not in _names(exc):
                raise
            system, rest = chat[0]["content"], chat[1:]
            if rest and rest[0]["role"] == "user":
                rest = [{**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
            else:
                rest = [{"role": "user", "content": system}, *rest]
            return self._render(rest)

    def _render(self, chat: list[dict[str, str]]) -> str:
        text = self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):  # a batch of one, in some versions
            text = text[0]
        return str(text)

    def _encode(self, messages: list[Message]) -> Any:
        """The prompt's token ids, a (1, n) tensor on the model's device. The template writes
        any BOS itself, so the tokenizer adds no special tokens of its own."""
        encoded = self._tokenizer(
            self.prompt(messages), add_special_tokens=False, return_tensors="pt"
        )
        return encoded["input_ids"].to(self._model.device)

    def _eos_ids(self) -> set[int]:
        """Tokens that end a reply: the model's EOS ids and the tokenizer's (a chat model's
        end-of-turn token is often only the latter)."""
        ids: set[int] = set()
        for value in (self._model.generation_config.eos_token_id, self._tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(int(v) for v in value)
        return ids

    # -- generation -------------------------------------------------------------------
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
                f"{self.name} runs through transformers without native tool calls; "
                "use the markdown protocol (`--protocol markdown`)."
            )
        if self._model is None:
            raise ConfigError(f"{self.name} has been closed; create the model again.")
        input_ids = self._encode(messages)
        prompt_tokens = int(input_ids.shape[-1])
        max_new = int(options.get("max_tokens", self.max_tokens))
        streamer = self._transformers.TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=_POLL_S
        )
        cancel = threading.Event()
        result: dict[str, Any] = {}
        generation = {
            "input_ids": input_ids,
            "attention_mask": self._torch.ones_like(input_ids),
            "generation_config": self._generation_config(max_new, options, stop),
            "tokenizer": self._tokenizer,  # for stop_strings
            "streamer": streamer,
            "stopping_criteria": self._transformers.StoppingCriteriaList(
                [_Cancelled(cancel, self._torch)]
            ),
        }
        worker = threading.Thread(
            target=self._generate,
            args=(generation, result),
            name="codeinterp-hf-generate",
            daemon=True,
        )
        cutter = StopCutter(stop)
        worker.start()
        try:
            for text in _texts(streamer, worker):
                shown = cutter.feed(text)
                if shown:
                    yield Delta(text=shown)
                if cutter.stopped:
                    cancel.set()
                    break
            cancel.set()
            worker.join()
            if "error" in result:
                raise result["error"]
            rest = cutter.flush()
            if rest:
                yield Delta(text=rest)
        finally:
            cancel.set()  # the caller closed the stream early: stop at the next token
            worker.join()
        completion = result["sequences"][0, prompt_tokens:].tolist()
        length = not cutter.stopped and len(completion) >= max_new
        if completion and completion[-1] in self._stop_ids:
            length = False
        yield Delta(
            finish_reason="length" if length else "stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(completion)),
        )

    def _generation_config(
        self, max_new: int, options: dict[str, Any], stop: list[str] | None
    ) -> Any:
        """The model's own generation settings, with ours on top: greedy at temperature 0
        (without the sampling settings an instruct model ships, which would only warn), and
        the stop strings, so generation ends on the token that completes one (the streamer
        passes on whole words only, so the text alone could show it late)."""
        config = copy.deepcopy(self._model.generation_config)
        config.stop_strings = [s for s in stop or [] if s] or None
        temperature = float(options.get("temperature", 0.0))
        config.max_new_tokens = max_new
        config.max_length = None
        config.do_sample = temperature > 0
        if temperature > 0:
            config.temperature = temperature
            if "top_p" in options:
                config.top_p = float(options["top_p"])
        else:
            for name, neutral in _NEUTRAL_SAMPLING.items():
                if hasattr(config, name):
                    setattr(config, name, neutral)
        config.eos_token_id = sorted(self._stop_ids) or None
        if config.pad_token_id is None:
            pad = self._tokenizer.pad_token_id
            config.pad_token_id = pad if pad is not None else min(self._stop_ids, default=0)
        return config

    def _generate(self, generation: dict[str, Any], result: dict[str, Any]) -> None:
        try:
            with self._torch.no_grad():
                output = self._model.generate(**generation)
            result["sequences"] = getattr(output, "sequences", output)
        except BaseException as exc:  # raised again in stream(), in the caller's thread
            result["error"] = exc

    def close(self) -> None:
        """Let go of the weights (a GPU's memory is freed at once)."""
        self._model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


class _Cancelled:
    """A stopping criterion: true once `event` is set (a stop string, or the stream closed)."""

    def __init__(self, event: threading.Event, torch: Any) -> None:
        self.event = event
        self.torch = torch

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self.torch.full(
            (input_ids.shape[0],),
            self.event.is_set(),
            dtype=self.torch.bool,
            device=input_ids.device,
        )


def _texts(streamer: Any, worker: threading.Thread) -> Iterator[str]:
    """The streamer's text pieces until it ends, or until the worker dies without ending it
    (an exception in generate())."""
    while True:
        try:
            text = next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if worker.is_alive():
                continue
            return
        if text:
            yield str(text)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


@contextmanager
def _loading_errors(model: str, local_files_only: bool) -> Iterator[None]:
    """Turns transformers' loading failures into ConfigErrors that name the fix."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise ConfigError(
                f"{model} contains custom code (auto_map in its config), which runs only with "
                "trust_remote_code=True: read that code, and pass it only if you trust it."
            ) from exc
        where = " from local files" if local_files_only else ""
        raise ConfigError(
            f"Cannot load {model!r}{where}: {exc}\nGive a folder with the model, or download "
            "it into the Hugging Face cache first (`hf download ORG/NAME`)."
        ) from exc
