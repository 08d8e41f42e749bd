"""What the loop yields. Every surface (CLI, HTTP SSE, web page, MCP) consumes these events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from codeinterp.models.base import Usage
from codeinterp.outputs import Execution, Output

StopReason = Literal["answered", "max_rounds", "interrupted", "model_error"]


@dataclass(frozen=True)
class TextDelta:
    """Prose (or code, as it is written) streaming from the model."""

    text: str
    round: int


@dataclass(frozen=True)
class CodeBlock:
    """A complete block of code that is about to run."""

    code: str
    round: int
    language: str = "python"


@dataclass(frozen=True)
class OutputEvent:
    """One output of the running cell, as it is produced."""

    output: Output
    round: int


@dataclass(frozen=True)
class ExecutionDone:
    execution: Execution
    round: int


@dataclass(frozen=True)
class RoundDone:
    round: int
    usage: Usage | None = None


@dataclass(frozen=True)
class Finished:
    stop_reason: StopReason
    answer: str  # the model's last prose, or the error text for model_error
    rounds: int


Event: TypeAlias = TextDelta | CodeBlock | OutputEvent | ExecutionDone | RoundDone | Finished
