"""Executor backends, found by name through the `codeinterp.executors` entry points.

The built-in backends are registered the same way as third-party ones (see pyproject.toml);
`BUILTIN` is only the fallback for running from a source tree without installed metadata.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from codeinterp.errors import ConfigError
from codeinterp.executors.base import (
    Capabilities,
    Executor,
    Session,
    SessionState,
)

__all__ = [
    "Capabilities",
    "Executor",
    "Session",
    "SessionState",
    "available_executors",
    "get_executor",
]

ENTRY_POINT_GROUP = "codeinterp.executors"

BUILTIN = {
    "sandbox": "codeinterp.executors.sandbox:SandboxExecutor",
    "jupyter": "codeinterp.executors.jupyter:JupyterExecutor",
    "gateway": "codeinterp.executors.gateway:GatewayExecutor",
    "repl": "codeinterp.executors.repl:ReplExecutor",
    "subprocess": "codeinterp.executors.subprocess:SubprocessExecutor",
    "inprocess": "codeinterp.executors.inprocess:InProcessExecutor",
}


def available_executors() -> dict[str, str]:
    """Executor names mapped to their `module:attribute` targets."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def get_executor(name: str, **options: Any) -> Executor:
    """Create the executor registered as `name`, passing it `options`."""
    targets = available_executors()
    if name not in targets:
        raise ConfigError(
            f"Unknown executor {name!r}. Choose one of: {', '.join(sorted(targets))}."
        )
    module_name, _, attr = targets[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    executor: Executor = factory(**options)
    return executor
