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
