"""Model backends, found by name through the `codeinterp.models` entry points.

A model is chosen with a spec string:

    qwen-0.5b                  the embedded default (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M)
    qwen-1.5b, smollm2         other embedded models, if their packages are installed
    llamacpp:/path/model.gguf  any local GGUF file
    openai:gpt-4o-mini         any OpenAI-compatible server (base URL and key from options/env)
    hf:org/name                a local Hugging Face model through transformers
    scripted                   replays replies given in code (tests, demos)

Built-in backends are registered like third-party ones (pyproject.toml); `BUILTIN` is the
fallback when running from a source tree without installed metadata.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from codeinterp.errors import ConfigError
from codeinterp.models.base import Delta, Message, Model, ToolCall, ToolSpec, Usage

__all__ = [
    "DEFAULT_MODEL",
    "Delta",
    "Message",
    "Model",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "available_backends",
    "get_model",
]

ENTRY_POINT_GROUP = "codeinterp.models"
DEFAULT_MODEL = "qwen-0.5b"

BUILTIN = {
    "scripted": "codeinterp.models.scripted:ScriptedModel",
    "llamacpp": "codeinterp.models.llamacpp:LlamaCppModel",
    "openai": "codeinterp.models.openai:OpenAIModel",
    "hf": "codeinterp.models.transformers:TransformersModel",
    "embedded": "codeinterp.models.embedded:embedded_model",
}

# Names of embedded models (see embedded.py): `qwen-0.5b` means `embedded:qwen-0.5b`.
EMBEDDED_ALIASES = ("qwen-0.5b", "qwen-1.5b", "smollm2")


def available_backends() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def parse_spec(spec: str) -> tuple[str, str]:
    """ "openai:gpt-4o-mini" -> ("openai", "gpt-4o-mini"); "qwen-0.5b" -> ("embedded", ...)."""
    if spec in EMBEDDED_ALIASES:
        return "embedded", spec
    backend, sep, rest = spec.partition(":")
    if not sep and backend not in available_backends():
        raise ConfigError(
            f"Unknown model {spec!r}. Use one of {', '.join(EMBEDDED_ALIASES)}, or "
            "BACKEND:NAME with BACKEND in " + ", ".join(sorted(available_backends())) + "."
        )
    return backend, rest


def get_model(spec: str = DEFAULT_MODEL, **options: Any) -> Model:
    """Create the model named by `spec` (see the module docstring), passing it `options`."""
    backend, name = parse_spec(spec)
    targets = available_backends()
    if backend not in targets:
        raise ConfigError(
            f"Unknown model backend {backend!r} in {spec!r}. "
            f"Choose one of: {', '.join(sorted(targets))}."
        )
    module_name, _, attr = targets[backend].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    model: Model = factory(name, **options) if name else factory(**options)
    return model
