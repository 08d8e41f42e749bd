"""`codeinterp exec`, run as a user would: the installed console script in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "codeinterp"


def run(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_several_c_options_are_cells_of_one_session() -> None:
    done = run("exec", "-c", "x = 6 * 7", "-c", "print(x)", "-c", "x + 1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42\n43\n"


def test_code_from_stdin_and_file(tmp_path: Path) -> None:
    assert run("exec", stdin="print('from stdin')").stdout == "from stdin\n"
    script = tmp_path / "job.py"
    script.write_text("total = sum(range(5))\nprint(total)\n")
    assert run("exec", str(script)).stdout == "10\n"


def test_error_goes_to_stderr_with_exit_status_1() -> None:
    done = run("exec", "-c", "print('before')", "-c", "1 / 0", "-c", "print('after')")
    assert done.returncode == 1
    assert done.stdout == "before\nafter\n"
    assert "ZeroDivisionError: division by zero" in done.stderr
    assert "\x1b[" not in done.stderr  # no colour when not on a terminal


def test_json_prints_one_object_per_cell_with_base64_images() -> None:
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
    done = run("exec", "--json", "-c", "print('hi')", "-c", plot)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["outputs"] == [{"type": "stream", "name": "stdout", "text": "hi\n"}]
    assert first["error"] is None and first["timed_out"] is False
    assert isinstance(first["duration_s"], float)
    png = base64.b64decode(second["outputs"][0]["data"]["image/png"])
    assert png.startswith(b"\x89PNG")


def test_timeout_is_reported_with_exit_status_3() -> None:
    done = run("exec", "--timeout-s", "0.5", "-c", "while True: pass", "-c", "print('next')")
    assert done.returncode == 3
    assert "time limit" in done.stderr
    assert done.stdout == "next\n"


def test_workspace_option_runs_code_among_the_users_files(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    code = "import csv\nrows = list(csv.DictReader(open('data.csv')))\nprint(len(rows))"
    done = run(
        "exec",
        "--workspace",
        str(tmp_path),
        "-c",
        code,
        "-c",
        "with open('out.txt', 'w') as f:\n    f.write('ok')",
    )
    assert done.stdout == "2\n"
    assert (tmp_path / "out.txt").read_text() == "ok"


def test_every_backend_is_selectable(tmp_path: Path) -> None:
    for name in ("sandbox", "repl", "subprocess", "inprocess", "jupyter"):
        done = run("exec", "--executor", name, "-c", "print(2 + 2)")
        assert done.returncode == 0, (name, done.stderr)
        assert done.stdout == "4\n", name
    warned = run("exec", "--executor", "inprocess", "-c", "1")
    assert "isolates nothing" in warned.stderr


def test_unknown_executor_names_the_choices() -> None:
    done = run("exec", "--executor", "nope", "-c", "1")
    assert done.returncode == 2
    assert "repl" in done.stderr and "jupyter" in done.stderr


def test_images_dir_saves_plots(tmp_path: Path) -> None:
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2])"
    done = run("exec", "--images-dir", str(tmp_path / "plots"), "-c", plot)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "plots" / "figure-1.png"
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert "figure-1.png" in done.stdout


def test_default_executor_is_the_sandbox() -> None:
    done = run("exec", "-c", "import os", "-c", "print(os.getcwd(), os.getuid() != 0)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/workspace True\n"


def test_doctor_reports_layers_read_back_from_a_session() -> None:
    done = run("doctor")
    assert done.returncode == 0, done.stderr
    assert "This machine allows:" in done.stdout
    assert "A sandbox session got (read back from the host):" in done.stdout
    for line in ("seccomp", "no_new_privs", "pid namespace", "mount /workspace"):
        assert line in done.stdout
    session_part = done.stdout.split("A sandbox session got")[1]
    assert "ok  seccomp" in session_part and "mode 2" in session_part


def _replies(tmp_path: Path, *replies: str) -> str:
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(list(replies)))
    return f"scripted:{path}"


def test_run_prints_the_event_stream_as_json(tmp_path: Path) -> None:
    model = _replies(tmp_path, "```python\nprint(6 * 7)\n```", "The answer is 42.")
    done = run("run", "six times seven?", "--model", model, "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.count("code") == 1 and kinds[-1] == "finished"
    execution = next(e for e in events if e["type"] == "execution")["execution"]
    assert execution["outputs"] == [{"type": "stream", "name": "stdout", "text": "42\n"}]
    assert events[-1]["stop_reason"] == "answered"
    assert events[-1]["answer"] == "The answer is 42."


def test_run_piped_keeps_prose_and_results_on_lines_of_their_own(tmp_path: Path) -> None:
    model = _replies(tmp_path, "Let me compute.\n```python\nprint(6 * 7)\n```", "It is 42.")
    done = run("run", "six times seven?", "--model", model)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "42" in lines  # the result is not glued to the end of the code block
    assert "It is 42." in lines
    assert done.stdout.endswith("\n")


def test_run_exits_1_when_the_model_never_answers(tmp_path: Path) -> None:
    model = _replies(tmp_path, "```python\n1\n```", "```python\n2\n```")
    done = run("run", "loop", "--model", model, "--max-rounds", "2", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout.splitlines()[-1])["stop_reason"] == "max_rounds"


def test_chat_shows_code_results_and_saves_plots(tmp_path: Path) -> None:
    plot = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nprint('drawn')\n```"
    model = _replies(tmp_path, plot, "Here is the plot.", "Bye.")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    done = run(
        "chat", "--model", model, "--workspace", str(workspace),
        stdin="draw squares\n/reset\nsay bye\n/exit\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "drawn" in out and "Here is the plot." in out and "Bye." in out
    assert "reset" in out
    saved = workspace / "plots" / "figure-1.png"
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert "figure-1.png" in out


def test_unknown_model_names_the_choices() -> None:
    done = run("run", "x", "--model", "nonsense")
    assert done.returncode == 2
    assert "qwen-0.5b" in done.stderr
