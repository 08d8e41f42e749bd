"""The shared vocabulary: what one cell produced, in the Jupyter display model.

Every part of codeinterp speaks these types: executors produce them, the loop feeds them to
the model, the CLI, server and notebook export render them. This module imports nothing of ours.

Errors raised by user code are *data* (`Execution.error`), never exceptions; so is the loss of a
session's state when user code kills its interpreter (`Execution.lost`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

StreamName = Literal["stdout", "stderr"]

# MIME types whose payload is binary; everything else is text. Binary payloads are `bytes` in
# memory and base64 strings on the wire (as in Jupyter's own messages).
BINARY_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True)
class Stream:
    """Text a cell wrote to stdout or stderr."""

    name: StreamName
    text: str
    output_type: Literal["stream"] = field(default="stream", init=False)


@dataclass(frozen=True)
class Display:
    """A rich output: a MIME bundle such as {"text/plain": ..., "image/png": b"..."}.

    `is_result` marks the value of the cell's trailing expression (Jupyter's `execute_result`).
    """

    data: dict[str, str | bytes]
    metadata: dict[str, Any] = field(default_factory=dict)
    is_result: bool = False
    output_type: Literal["display"] = field(default="display", init=False)

    @property
    def text(self) -> str:
        value = self.data.get("text/plain", "")
        return value if isinstance(value, str) else ""


Output: TypeAlias = Stream | Display


@dataclass(frozen=True)
class Error:
    """An exception raised by user code, with a traceback free of interpreter internals."""

    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)


@dataclass
class Execution:
    """Everything one cell produced.

    - `timed_out`: the cell hit its wall-clock limit and was interrupted (or its session killed).
    - `lost`: why the session's state was lost during this cell (e.g. "signal 11 (SIGSEGV)",
      "exit 1", "timeout: the interpreter ignored the interrupt"), or None. The next cell runs
      in a fresh interpreter on the same workspace.
    - `truncated_chars`: how many characters of stream output were cut to respect the cap.
    """

    outputs: list[Output] = field(default_factory=list)
    error: Error | None = None
    execution_count: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    lost: str | None = None
    truncated_chars: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.lost is None

    def stream_text(self, name: StreamName | None = None) -> str:
        """The concatenated text of stdout, stderr, or both (in order) when `name` is None."""
        return "".join(
            o.text
            for o in self.outputs
            if isinstance(o, Stream) and (name is None or o.name == name)
        )

    @property
    def stdout(self) -> str:
        return self.stream_text("stdout")

    @property
    def stderr(self) -> str:
        return self.stream_text("stderr")

    @property
    def result(self) -> Display | None:
        """The trailing expression's value, if the cell had one."""
        return next((o for o in self.outputs if isinstance(o, Display) and o.is_result), None)

    def images(self, mime: str = "image/png") -> list[bytes]:
        return [
            value
            for o in self.outputs
            if isinstance(o, Display)
            for value in [o.data.get(mime)]
            if isinstance(value, bytes)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; binary MIME payloads are base64."""
        return {
            "outputs": [output_to_dict(o) for o in self.outputs],
            "error": None if self.error is None else error_to_dict(self.error),
            "execution_count": self.execution_count,
            "duration_s": round(self.duration_s, 6),
            "timed_out": self.timed_out,
            "lost": self.lost,
            "truncated_chars": self.truncated_chars,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        return cls(
            outputs=[output_from_dict(o) for o in d.get("outputs", [])],
            error=None if d.get("error") is None else error_from_dict(d["error"]),
            execution_count=d.get("execution_count"),
            duration_s=float(d.get("duration_s", 0.0)),
            timed_out=bool(d.get("timed_out", False)),
            lost=d.get("lost"),
            truncated_chars=int(d.get("truncated_chars", 0)),
        )


def encode_bundle(data: dict[str, str | bytes]) -> dict[str, str]:
    return {
        mime: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
        for mime, v in data.items()
    }


def decode_bundle(data: dict[str, Any]) -> dict[str, str | bytes]:
    """Inverse of `encode_bundle`; JSON values (application/json) are kept as their text."""
    out: dict[str, str | bytes] = {}
    for mime, v in data.items():
        if mime in BINARY_MIME_TYPES and isinstance(v, str):
            out[mime] = base64.b64decode(v)
        elif isinstance(v, bytes | str):
            out[mime] = v
        else:
            import json

            out[mime] = json.dumps(v)
    return out


def output_to_dict(o: Output) -> dict[str, Any]:
    if isinstance(o, Stream):
        return {"type": "stream", "name": o.name, "text": o.text}
    return {
        "type": "result" if o.is_result else "display",
        "data": encode_bundle(o.data),
        "metadata": o.metadata,
    }


def output_from_dict(d: dict[str, Any]) -> Output:
    if d["type"] == "stream":
        return Stream(d["name"], d["text"])
    return Display(
        decode_bundle(d["data"]), d.get("metadata") or {}, is_result=d["type"] == "result"
    )


def error_to_dict(e: Error) -> dict[str, Any]:
    return {"ename": e.ename, "evalue": e.evalue, "traceback": list(e.traceback)}


def error_from_dict(d: dict[str, Any]) -> Error:
    return Error(str(d["ename"]), str(d["evalue"]), [str(line) for line in d.get("traceback", [])])
