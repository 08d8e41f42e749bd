"""Notebook export of a real conversation: the loop runs, the store keeps it, nbformat judges."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from codeinterp.agent import Interpreter
from codeinterp.agent.serialize import event_to_dict
from codeinterp.executors import get_executor
from codeinterp.models.scripted import ScriptedModel
from codeinterp.notebook import conversation_notebook, write_notebook
from codeinterp.store import Store

SCRIPT = Path(sys.executable).parent / "codeinterp"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PLOT = """\
I'll plot the squares and print their sum.
```python
import matplotlib.pyplot as plt
squares = [i * i for i in range(10)]
print("sum:", sum(squares))
plt.plot(squares)
plt.title("squares")
plt.show()
max(squares)
```"""
FAIL = """\
Dividing by the smallest square:
```python
squares[-1] / squares[0]
```"""
TURNS = [
    ("Plot the first ten squares.", [PLOT, "The plot shows a parabola; the largest is 81."]),
    ("Now divide the largest by the smallest.", [FAIL, "That divides by zero: 0 is a square."]),
]


def run_conversation() -> list[dict[str, Any]]:
    """Events as the server stores them: a `user` event, then the loop's, for each turn."""
    model = ScriptedModel([reply for _, replies in TURNS for reply in replies])
    events: list[dict[str, Any]] = []
    with get_executor("repl", timeout_s=60) as executor, executor.open() as session:
        interpreter = Interpreter(model, session)
        for turn, (text, _) in enumerate(TURNS, start=1):
            events.append({"type": "user", "text": text, "turn": turn})
            events += [{**event_to_dict(e), "turn": turn} for e in interpreter.chat(text)]
    return events


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A store holding the conversation; yields (database path, conversation id)."""
    path = tmp_path_factory.mktemp("store") / "codeinterp.db"
    with Store(path) as store:
        c = store.create_conversation(
            title="Squares: a plot/and an error", model="scripted", executor="repl", workspace="/"
        )
        for event in run_conversation():
            store.append_event(c.id, event.pop("turn"), event)
    yield path, c.id


@pytest.fixture(scope="module")
def events(db: tuple[Path, str]) -> list[dict[str, Any]]:
    with Store(db[0]) as store:
        return store.events(db[1])


def valid(nb: dict[str, Any]) -> dict[str, Any]:
    nbformat.validate(nbformat.from_dict(nb))
    return nb


def test_a_real_conversation_exports_to_a_valid_notebook(events: list[dict[str, Any]]) -> None:
    nb = valid(conversation_notebook(events, title="Squares", metadata={"codeinterp": {"x": 1}}))
    assert nb["metadata"]["title"] == "Squares" and nb["metadata"]["codeinterp"] == {"x": 1}
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    shape = [(c["cell_type"], c["metadata"]["codeinterp"]["role"]) for c in cells]
    assert shape == [
        ("markdown", "note"),  # the title
        ("markdown", "user"),
        ("markdown", "assistant"),  # the prose before the first block
        ("code", "assistant"),
        ("markdown", "assistant"),  # the answer
        ("markdown", "user"),
        ("markdown", "assistant"),
        ("code", "assistant"),
        ("markdown", "assistant"),
    ]
    assert cells[0]["source"] == "# Squares"
    assert cells[1]["source"] == f"**User:** {TURNS[0][0]}"
    assert cells[2]["source"] == "I'll plot the squares and print their sum."  # no code in it
    assert cells[4]["source"] == TURNS[0][1][1]
    assert cells[6]["source"] == "Dividing by the smallest square:"
    assert "```" not in "".join(c["source"] for c in cells if c["cell_type"] == "markdown")
    assert len({c["id"] for c in cells}) == len(cells)


def test_code_cells_carry_streams_results_images_and_errors(events: list[dict[str, Any]]) -> None:
    plot, fail = (
        c for c in valid(conversation_notebook(events))["cells"] if c["cell_type"] == "code"
    )
    assert plot["source"].startswith("import matplotlib.pyplot as plt")
    assert plot["source"].endswith("max(squares)")
    assert (plot["execution_count"], fail["execution_count"]) == (1, 2)
    kinds = [o["output_type"] for o in plot["outputs"]]
    assert kinds == ["stream", "display_data", "execute_result"]
    stream, figure, result = plot["outputs"]
    assert (stream["name"], stream["text"]) == ("stdout", "sum: 285\n")
    assert base64.b64decode(figure["data"]["image/png"]).startswith(PNG_MAGIC)
    assert result["data"]["text/plain"] == "81" and result["execution_count"] == 1

    (error,) = fail["outputs"]
    assert error["output_type"] == "error"
    assert (error["ename"], error["evalue"]) == ("ZeroDivisionError", "division by zero")
    assert "squares[-1] / squares[0]" in "\n".join(error["traceback"])


def test_unusual_endings_are_noted_and_partial_cells_kept() -> None:
    """A reset, a stop at the round limit, and a cell whose execution never arrived (the
    server was killed while it ran): its streamed outputs are kept, without a count."""
    events: list[dict[str, Any]] = [
        {"type": "user", "text": "loop"},
        {"type": "text", "round": 1, "text": "Counting:\n```python\nfor i in range(3): print(i)"},
        {"type": "code", "round": 1, "code": "for i in range(3): print(i)"},
        *({"type": "output", "round": 1, "output": {"type": "stream", "name": "stdout", "text": t}}
          for t in ("0\n", "1\n")),
        {"type": "finished", "stop_reason": "max_rounds", "answer": "", "rounds": 1},
        {"type": "reset"},
        {"type": "user", "text": "hello"},
        {"type": "text", "round": 1, "text": "Unfinished ```python\nprint("},
        {"type": "finished", "stop_reason": "interrupted", "answer": "", "rounds": 1},
    ]  # fmt: skip
    cells = valid(conversation_notebook(events))["cells"]
    sources = [c["source"] for c in cells]
    assert sources[1] == "Counting:"
    assert cells[2]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "0\n1\n"}]
    assert cells[2]["execution_count"] is None
    assert "round limit" in sources[3] and "reset" in sources[4]
    assert sources[6] == "Unfinished ```python\nprint("  # no code ran: the text stays whole
    assert "interrupted" in sources[7]


def test_write_notebook(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    path = tmp_path / "out" / "conversation.ipynb"
    write_notebook(conversation_notebook(events), path)
    assert nbformat.read(path, as_version=4).cells[2].cell_type == "code"
    assert [p.name for p in path.parent.iterdir()] == ["conversation.ipynb"]  # no temporaries


def export(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "export", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_export_command_end_to_end(tmp_path: Path, db: tuple[Path, str]) -> None:
    path, conversation_id = db
    listed = export("--list", "--db", str(path), cwd=tmp_path)
    assert listed.returncode == 0 and conversation_id in listed.stdout
    assert "Squares: a plot/and an error" in listed.stdout

    done = export(conversation_id, "--ipynb", "--db", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "Squares_ a plot_and an error.ipynb"  # named after the title, made safe
    assert f"Wrote {written.name}" in done.stderr
    nb = nbformat.read(written, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.codeinterp.conversation == conversation_id
    assert [c.cell_type for c in nb.cells].count("code") == 2

    chosen = tmp_path / "sub" / "chosen.ipynb"  # a unique prefix of the id will do
    done = export(conversation_id[:8], "-o", str(chosen), "--db", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(chosen.read_text())["cells"] == json.loads(written.read_text())["cells"]

    unknown = export("0123456789", "--db", str(path), cwd=tmp_path)
    assert unknown.returncode == 2
    assert "'0123456789' is no conversation" in unknown.stderr
    assert "codeinterp export --list" in unknown.stderr

    missing = export("--list", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert missing.returncode == 2 and "No conversation database" in missing.stderr
    assert not (tmp_path / "none.db").exists()
