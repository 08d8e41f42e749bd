"""`hf`: a local Hugging Face model through transformers (the seed's path: Llama, ChatGLM,
CodeGeeX2-style chat models), with the tokenizer's own chat template.

Remote code runs only when asked (`trust_remote_code=True`); 4- or 8-bit loading only when a
GPU and bitsandbytes are present. Weights are read from a local folder or the local Hugging Face
cache: nothing is downloaded unless the caller allows it (`local_files_only=False`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from codeinterp.errors import ConfigError, DependencyMissing
from codeinterp.models.base import Delta, Message, ToolSpec, Usage


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing("transformers and torch", "hf", "a Hugging Face model") from exc
    return torch, transformers


class TransformersModel:
    supports_tools = False
    supports_images = False
    supports_grammar = False

    def __init__(
        self,
        model: str,
        *,
        trust_remote_code: bool = False,
        quantize: int | None = None,
        local_files_only: bool = True,
        max_tokens: int = 1024,
    ) -> None:
        torch, transformers = _import()
        self.name = f"hf:{model}"
        self.max_tokens = max_tokens
        self._torch = torch
        self._transformers = transformers
        loading: dict[str, Any] = {
            "trust_remote_code": trust_remote_code,
            "local_files_only": local_files_only,
        }
        if quantize is not None:
            if quantize not in (4, 8):
                raise ConfigError("quantize must be 4 or 8 (bits)")
            if not torch.cuda.is_available():
                raise ConfigError("4/8-bit loading needs a CUDA GPU; drop `quantize` on a CPU.")
            loading["quantization_config"] = transformers.BitsAndBytesConfig(
                **{f"load_in_{quantize}bit": True}
            )
            loading["device_map"] = "auto"
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(model, **loading)
            self._model = transformers.AutoModelForCausalLM.from_pretrained(model, **loading)
        except OSError as exc:
            raise ConfigError(
                f"Cannot load {model!r} from local files: {exc}. Give a folder with the model, "
                "or download it first (e.g. `huggingface-cli download ORG/NAME`)."
            ) from exc
        if self._tokenizer.chat_template is None:
            raise ConfigError(f"{model} has no chat template; use a chat (instruct) model.")
        self._model.eval()

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
            raise ConfigError("Use the markdown protocol with Hugging Face models.")
        chat = [{"role": m.role, "content": m.content} for m in messages]
        inputs = self._tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self._model.device)
        streamer = self._transformers.TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        temperature = float(options.get("temperature", 0.0))
        generation = {
            **inputs,
            "streamer": streamer,
            "max_new_tokens": int(options.get("max_tokens", self.max_tokens)),
            "do_sample": temperature > 0,
            **({"temperature": temperature} if temperature > 0 else {}),
        }
        worker = threading.Thread(target=self._generate, args=(generation,), daemon=True)
        worker.start()
        produced = 0
        for text in streamer:
            cut = [i for s in stop or [] if (i := text.find(s)) >= 0]
            if cut:
                yield Delta(text=text[: min(cut)])
                break
            if text:
                produced += 1
                yield Delta(text=text)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        yield Delta(
            finish_reason="stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=produced),
        )

    def _generate(self, generation: dict[str, Any]) -> None:
        with self._torch.no_grad():
            self._model.generate(**generation)

    def close(self) -> None:
        pass
