"""The loop: a model writes code, the code runs at once, results go back, round after round."""

from codeinterp.agent.events import (
    CodeBlock,
    Event,
    ExecutionDone,
    Finished,
    OutputEvent,
    RoundDone,
    TextDelta,
)
from codeinterp.agent.interpreter import Interpreter

__all__ = [
    "CodeBlock",
    "Event",
    "ExecutionDone",
    "Finished",
    "Interpreter",
    "OutputEvent",
    "RoundDone",
    "TextDelta",
]
