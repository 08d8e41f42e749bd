"""A conversation as a Jupyter notebook (nbformat v4.5), outputs and images included.

Input: the conversation's event dicts in order, as `Store.events()` returns them or
`event_to_dict` makes them. The loop's events do not carry the user's words, so the server
stores `{"type": "user", "text": ...}` at the start of each turn; each becomes a markdown cell.

Mapping:
- `text` events of a round are joined into the model's prose. When the round ran code, its
  prose is the text before the opening ```python fence (the block becomes a code cell instead);
  a round that ran no code (the answer, or a reply cut off mid-block) keeps its whole text.
- `code` → a code cell; its outputs come from the matching `execution` event (stream, result,
  display, error, plus a stderr note for a timeout or a lost interpreter). A cell whose
  execution never finished (the process was killed) keeps the `output` events it had.
- `finished` with a stop other than "answered", and `reset`, become short italic notes.
Cells carry `metadata.codeinterp.role` ("user", "assistant", "note") so a reader can style them.

Only the standard library: nbformat validates in the tests, not at run time.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from codeinterp.agent.protocols import FENCE_OPEN

NBFORMAT, NBFORMAT_MINOR = 4, 5
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

JSON_MIME = re.compile(r"application/(.*\+)?json")  # nbformat keeps these as JSON values
STOP_NOTES = {
    "max_rounds": "Stopped: the model reached its round limit.",
    "interrupted": "Stopped: interrupted.",
    "model_error": "The model failed: {answer}",
}


class _Builder:
    """Walks the events once, keeping the pending prose and the code cell still running."""

    def __init__(self) -> None:
        self.cells: list[dict[str, Any]] = []
        self.prose = ""
        self.prose_round: tuple[Any, Any] | None = None
        self.running: dict[str, Any] | None = None  # a code cell awaiting its execution
        self.count = 0

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "text":
            key = (event.get("turn"), event.get("round"))
            if key != self.prose_round:
                self.flush()
                self.prose_round = key
            self.prose += str(event.get("text", ""))
        elif kind == "code":
            self.flush(cut_code=True)
            self.count += 1
            cell = self.cell("code", str(event.get("code", "")), "assistant")
            cell.update(outputs=[], execution_count=None)
            self.cells.append(cell)
            self.running = cell
        elif kind == "output" and self.running is not None:
            append_output(self.running["outputs"], event.get("output") or {}, None)
        elif kind == "execution" and self.running is not None:
            execution = event.get("execution") or {}
            count = execution.get("execution_count")
            count = count if isinstance(count, int) else self.count
            self.running.update(outputs=execution_outputs(execution, count), execution_count=count)
            self.running = None
        elif kind == "round":
            self.flush()
        elif kind == "user":
            self.flush()
            self.markdown(f"**User:** {event.get('text', '')}", "user")
        elif kind == "finished":
            self.flush()
            note = STOP_NOTES.get(str(event.get("stop_reason")))
            if note:
                self.markdown(f"*{note.format(answer=event.get('answer', ''))}*", "note")
        elif kind == "reset":
            self.flush()
            self.markdown("*The conversation was reset: the model's history and the session's "
                          "state were cleared (workspace files kept).*", "note")  # fmt: skip

    def flush(self, *, cut_code: bool = False) -> None:
        """The pending prose becomes a markdown cell (without its code block if `cut_code`)."""
        text, self.prose, self.prose_round = self.prose, "", None
        if cut_code:
            lines = text.splitlines(keepends=True)
            fence = next((i for i, line in enumerate(lines) if FENCE_OPEN.match(line)), None)
            if fence is not None:
                text = "".join(lines[:fence])
        if text.strip():
            self.markdown(text.strip(), "assistant")

    def markdown(self, source: str, role: str) -> None:
        self.cells.append(self.cell("markdown", source, role))

    def cell(self, cell_type: str, source: str, role: str) -> dict[str, Any]:
        return {
            "cell_type": cell_type,
            "id": f"cell-{len(self.cells) + 1}",
            "metadata": {"codeinterp": {"role": role}},
            "source": source,
        }


def conversation_notebook(
    events: list[dict[str, Any]], *, title: str = "", metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An nbformat v4 notebook dict of the conversation; `metadata` is merged into the
    notebook's (e.g. `{"codeinterp": {"model": ..., "conversation": ...}}`)."""
    builder = _Builder()
    if title:
        builder.markdown(f"# {title}", "note")
    for event in events:
        builder.add(event)
    builder.flush()
    nb_metadata: dict[str, Any] = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    if title:
        nb_metadata["title"] = title
    nb_metadata.update(metadata or {})
    return {
        "nbformat": NBFORMAT,
        "nbformat_minor": NBFORMAT_MINOR,
        "metadata": nb_metadata,
        "cells": builder.cells,
    }


def write_notebook(nb: dict[str, Any], path: Path) -> None:
    """Write atomically (a temporary file renamed into place): never half a notebook."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(nb, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def execution_outputs(execution: dict[str, Any], count: int | None) -> list[dict[str, Any]]:
    """An `Execution.to_dict()` as nbformat outputs."""
    result = outputs(execution.get("outputs") or [], count)
    error = execution.get("error")
    if error:
        result.append(
            {
                "output_type": "error",
                "ename": str(error.get("ename", "")),
                "evalue": str(error.get("evalue", "")),
                "traceback": [str(line) for line in error.get("traceback") or []],
            }
        )
    if execution.get("timed_out"):
        result.append(_stderr("[the cell hit its time limit and was interrupted]\n"))
    if execution.get("lost"):
        result.append(_stderr(f"[the interpreter was lost ({execution['lost']}); state reset]\n"))
    return result


def outputs(items: list[dict[str, Any]], count: int | None) -> list[dict[str, Any]]:
    """Output dicts (`output_to_dict` form) as nbformat outputs."""
    result: list[dict[str, Any]] = []
    for item in items:
        append_output(result, item, count)
    return result


def append_output(result: list[dict[str, Any]], item: dict[str, Any], count: int | None) -> None:
    """Add one output dict to nbformat `result`; a stream joins the stream before it (as
    Jupyter shows them), so output streamed line by line is one block, not hundreds."""
    kind = item.get("type")
    if kind == "stream":
        name, text = str(item.get("name", "stdout")), str(item.get("text", ""))
        last = result[-1] if result else None
        if last and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            result.append({"output_type": "stream", "name": name, "text": text})
    elif kind in ("display", "result"):
        out: dict[str, Any] = {
            "output_type": "execute_result" if kind == "result" else "display_data",
            "data": _bundle(item.get("data") or {}),
            "metadata": dict(item.get("metadata") or {}),
        }
        if kind == "result":
            out["execution_count"] = count
        result.append(out)


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    """A MIME bundle for nbformat: binary payloads stay base64 text (as Jupyter stores them);
    JSON types hold the JSON value itself, not its text."""
    bundle: dict[str, Any] = {}
    for mime, value in data.items():
        if JSON_MIME.fullmatch(mime) and isinstance(value, str):
            try:
                bundle[mime] = json.loads(value)
            except ValueError:
                bundle[mime] = value
        elif isinstance(value, str):
            bundle[mime] = value
        else:
            bundle[mime] = json.dumps(value)
    return bundle


def _stderr(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stderr", "text": text}
