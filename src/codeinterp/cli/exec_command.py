"""`codeinterp exec`: run code in a session of any executor, without a model."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from codeinterp.cli.executor_args import add_executor_arguments, executor_options
from codeinterp.errors import CodeinterpError
from codeinterp.executors import get_executor
from codeinterp.executors.base import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT_S
from codeinterp.outputs import Display, Execution, Output, Stream
from codeinterp.render import clean_text, image_placeholder

if TYPE_CHECKING:
    pass

EXEC_EPILOG = """\
examples:
  codeinterp exec -c 'x = 6 * 7' -c 'print(x)'       two cells, one session
  codeinterp exec analysis.py --workspace ./data      a file, run where data lives
  echo '2 ** 100' | codeinterp exec --json            one JSON object per cell
exit status: 0 if every cell succeeded, 1 if a cell raised, 2 on bad usage,
3 if a cell timed out or its interpreter was lost.
"""


class TerminalPrinter:
    """Shows outputs to a person as they stream: stdout to stdout, stderr to stderr."""

    def __init__(self, out: TextIO, err: TextIO, images_dir: Path | None) -> None:
        self.out, self.err = out, err
        self.images_dir = images_dir
        self.figures = 0
        self.colour = err.isatty()

    def __call__(self, output: Output) -> None:
        if isinstance(output, Stream):
            stream = self.out if output.name == "stdout" else self.err
            stream.write(output.text)
            stream.flush()
        else:
            self.out.write(self._display_text(output) + "\n")
            self.out.flush()

    def _display_text(self, display: Display) -> str:
        for mime, data in display.data.items():
            if mime.startswith("image/"):
                self.figures += 1
                note = image_placeholder(mime, data, self.figures)
                if self.images_dir is not None and isinstance(data, bytes):
                    path = self._save(mime, data)
                    note = f"{note[:-1]} saved to {path}]"
                return note
        text = display.text
        if not text and "text/html" in display.data:
            text = "[text/html output]"
        return clean_text(text)

    def _save(self, mime: str, data: bytes) -> Path:
        assert self.images_dir is not None
        self.images_dir.mkdir(parents=True, exist_ok=True)
        extension = mime.split("/", 1)[1].split("+", 1)[0].replace("jpeg", "jpg")
        path = self.images_dir / f"figure-{self.figures}.{extension}"
        path.write_bytes(data)
        return path

    def finish(self, execution: Execution) -> None:
        if execution.error is not None:
            text = clean_text("\n".join(execution.error.traceback)) or (
                f"{execution.error.ename}: {execution.error.evalue}"
            )
            self.err.write(self._red(text) + "\n")
        if execution.timed_out:
            self.err.write(self._red("[the cell hit its time limit and was interrupted]") + "\n")
        if execution.lost is not None:
            self.err.write(
                self._red(f"[the interpreter was lost ({execution.lost}); state was reset]") + "\n"
            )
        self.err.flush()

    def _red(self, text: str) -> str:
        return f"\x1b[31m{text}\x1b[0m" if self.colour else text


def _cells(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    cells: list[str] = list(args.code or [])
    if args.file == "-" or (args.file is None and not cells):
        if stdin.isatty():
            print("Reading code from standard input; end it with Ctrl-D.", file=sys.stderr)
        cells.append(stdin.read())
    elif args.file is not None:
        try:
            cells.append(Path(args.file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CodeinterpError(f"Cannot read {args.file}: {exc.strerror}.") from exc
    return cells


def cmd_exec(args: argparse.Namespace) -> int:
    cells = _cells(args, sys.stdin)
    options = {"timeout_s": args.timeout_s, "max_output_chars": args.max_output_chars}
    options |= executor_options(args)
    with warnings.catch_warnings():
        if args.executor == "inprocess":
            warnings.simplefilter("always")
        executor = get_executor(args.executor, **options)
    status = 0
    with executor, executor.open(workspace=args.workspace) as session:
        for code in cells:
            if args.json:
                execution = session.execute(code)
                print(json.dumps(execution.to_dict()), flush=True)
            else:
                printer = TerminalPrinter(sys.stdout, sys.stderr, args.images_dir)
                execution = session.execute(code, on_output=printer)
                printer.finish(execution)
            if execution.timed_out or execution.lost is not None:
                status = max(status, 3)
            elif execution.error is not None:
                status = max(status, 1)
    return status


def register(commands: Any) -> None:
    run = commands.add_parser(
        "exec",
        help="run code in a session, without a model",
        description="Run code in one session: each -c is a cell, then FILE (or standard "
        "input) is one more cell. State carries over from cell to cell.",
        epilog=EXEC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", nargs="?", metavar="FILE", help="a file to run; '-' reads stdin")
    run.add_argument(
        "-c", dest="code", action="append", metavar="CODE", help="a cell of code (repeatable)"
    )
    add_executor_arguments(run)
    run.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"wall-clock limit per cell, in seconds (default: {DEFAULT_TIMEOUT_S:g})",
    )
    run.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="the session's working directory (default: a temporary one, removed after)",
    )
    run.add_argument(
        "--max-output-chars",
        type=int,
        default=DEFAULT_MAX_OUTPUT_CHARS,
        metavar="N",
        help="stream output kept per cell, head + tail (default: %(default)s)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object per cell")
    run.add_argument(
        "--images-dir", type=Path, metavar="DIR", help="save plots and images there as files"
    )
    run.set_defaults(handler=cmd_exec)
