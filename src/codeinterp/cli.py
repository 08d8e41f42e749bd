"""The `codeinterp` command line.

Subcommands:
  chat     talk with a model that runs code in a session (interactive)
  run      one task, one shot (--json: the event stream)
  eval     measure how often the loop solves a task suite
  exec     run code in a session of any executor, without a model
  doctor   which isolation layers this machine allows, and what a session gets
  mcp      an MCP server (stdio or streamable HTTP) for Claude Desktop, IDEs, agents
  export   a stored conversation as a Jupyter notebook (.ipynb)
  serve    the HTTP API and web page (sessions, files, conversations over SSE)
Environment variables are read here, at the edge, and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from codeinterp import __version__
from codeinterp.errors import CodeinterpError
from codeinterp.executors import available_executors, get_executor
from codeinterp.executors.base import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT_S
from codeinterp.outputs import Display, Execution, Output, Stream
from codeinterp.render import clean_text, image_placeholder

if TYPE_CHECKING:
    from codeinterp.agent import Event, Interpreter
    from codeinterp.agent.packages import PackageInstaller

DEFAULT_EXECUTOR = "sandbox"

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
    if args.executor == "gateway":
        if not args.gateway_url:
            raise CodeinterpError("--executor gateway needs --gateway-url URL.")
        token = os.environ.get("CODEINTERP_GATEWAY_TOKEN")
        options |= {"url": args.gateway_url, "token": token}
    elif args.gateway_url:
        raise CodeinterpError("--gateway-url is only for --executor gateway.")
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


def _model_options(args: argparse.Namespace) -> dict[str, object]:
    """Options for the chosen backend only; secrets come from the environment, here at the edge."""
    from codeinterp.models import parse_spec

    backend, _ = parse_spec(args.model)
    if backend == "openai":
        options: dict[str, object] = {}
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if base_url:
            options["base_url"] = base_url
        key = os.environ.get(args.api_key_env)
        if key:
            options["api_key"] = key
        return options
    if backend in ("embedded", "llamacpp"):
        return {"n_threads": args.threads} if args.threads else {}
    return {}


def _interpreter(args: argparse.Namespace, stack: contextlib.ExitStack) -> Interpreter:
    from codeinterp.agent import Interpreter
    from codeinterp.models import get_model

    model = get_model(args.model, **_model_options(args))
    stack.callback(model.close)
    executor = stack.enter_context(get_executor(args.executor, timeout_s=args.timeout_s))
    session = stack.enter_context(executor.open(workspace=args.workspace))
    return Interpreter(
        model,
        session,
        protocol=args.protocol,
        max_rounds=args.max_rounds,
        installer=_installer(args),
    )


def _installer(args: argparse.Namespace) -> PackageInstaller | None:
    from codeinterp.agent.packages import PackageInstaller, PackagePolicy

    if not args.allow_install:
        return None
    allow = {}
    for item in args.allow_install.split(","):
        module, _, requirement = item.strip().partition("=")
        allow[module] = requirement or module
    policy = PackagePolicy(allow=allow, index_url=args.package_index, find_links=args.wheelhouse)
    return PackageInstaller(policy)


def _drain(
    interpreter: Interpreter, events: Iterator[Event], show: Callable[[Event], None]
) -> None:
    """Show every event; the first Ctrl-C interrupts the turn (not the program)."""
    while True:
        try:
            for event in events:
                show(event)
            return
        except KeyboardInterrupt:
            interpreter.interrupt()


def cmd_chat(args: argparse.Namespace) -> int:
    from rich.console import Console

    from codeinterp.terminal import EventPrinter

    console = Console()
    with contextlib.ExitStack() as stack:
        with console.status(f"Loading {args.model} and opening a {args.executor} session…"):
            interpreter = _interpreter(args, stack)
        workspace = interpreter.session.workspace
        console.print(
            f"[bold]codeinterp[/bold] — model [cyan]{args.model}[/cyan], executor "
            f"[cyan]{args.executor}[/cyan], workspace [cyan]{workspace}[/cyan]\n"
            "Type a task. /reset starts over, /exit leaves. Ctrl-C stops a running answer."
        )
        for note in getattr(interpreter.session, "sandbox_notes", []):
            console.print(f"[yellow]sandbox: {note}[/yellow]")
        printer = EventPrinter(console, workspace)
        while True:
            try:
                text = console.input("[bold blue]you> [/bold blue]").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return 0
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                interpreter.reset()
                console.print("[yellow]Conversation and session reset; files kept.[/yellow]")
                continue
            if text:
                _drain(interpreter, interpreter.chat(text), printer)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from codeinterp.agent.events import Finished
    from codeinterp.agent.serialize import event_to_dict

    last: Finished | None = None
    with contextlib.ExitStack() as stack:
        interpreter = _interpreter(args, stack)
        if args.json:

            def show(event: Event) -> None:
                print(json.dumps(event_to_dict(event)), flush=True)

        else:
            from rich.console import Console

            from codeinterp.terminal import EventPrinter

            show = EventPrinter(Console(), interpreter.session.workspace)
        events: list[Event] = []

        def keep(event: Event) -> None:
            events.append(event)
            show(event)

        _drain(interpreter, interpreter.chat(args.task), keep)
        last = next((e for e in reversed(events) if isinstance(e, Finished)), None)
    return 0 if last is not None and last.stop_reason == "answered" else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from codeinterp.sandbox import doctor

    return doctor.run()


def cmd_mcp(args: argparse.Namespace) -> int:
    import ipaddress

    if args.http and not args.allow_remote:
        try:
            loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise CodeinterpError(
                f"--host {args.host} is not a loopback address; the server has no "
                "authentication, so pass --allow-remote to serve it anyway."
            )
    try:
        from codeinterp.mcp_server import serve
    except ModuleNotFoundError as exc:
        if exc.name != "mcp" and not (exc.name or "").startswith("mcp."):
            raise
        raise CodeinterpError("`codeinterp mcp` needs: pip install 'codeinterp[mcp]'.") from exc
    return serve(
        executor=args.executor,
        timeout_s=args.timeout_s,
        workspace_root=args.workspace_root,
        http=args.http,
        host=args.host,
        port=args.port,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from codeinterp.notebook import conversation_notebook, write_notebook
    from codeinterp.store import Store, default_db_path

    args.db = args.db or default_db_path()
    if not args.db.exists():
        raise CodeinterpError(
            f"No conversation database at {args.db}: `codeinterp serve` stores them there "
            "(--db PATH chooses another)."
        )
    with Store(args.db) as store:
        conversations = store.list_conversations()
        if args.list or args.conversation is None:
            for c in conversations:
                print(f"{c.id}  {c.created_at[:19].replace('T', ' ')}  {c.title or '(untitled)'}")
            if not conversations:
                print(f"No conversations in {args.db}.", file=sys.stderr)
            return 0
        # The full id, or an unambiguous prefix of it (as git takes commits).
        found = [c for c in conversations if c.id == args.conversation] or [
            c for c in conversations if c.id.startswith(args.conversation)
        ]
        if len(found) != 1:
            problem = "matches several conversations" if found else "is no conversation"
            raise CodeinterpError(
                f"{args.conversation!r} {problem} in {args.db}; "
                "`codeinterp export --list` shows the ids."
            )
        conversation = found[0]
        nb = conversation_notebook(
            store.events(conversation.id),
            title=conversation.title,
            metadata={"codeinterp": {"conversation": conversation.id, "model": conversation.model}},
        )
    name = "".join(ch if ch.isalnum() or ch in " ._-" else "_" for ch in conversation.title)
    path = args.output or Path(f"{name.strip(' .')[:80] or conversation.id}.ipynb")
    write_notebook(nb, path)
    print(f"Wrote {path} ({len(nb['cells'])} cells).", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress
    import secrets

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not args.allow_remote:
        raise CodeinterpError(
            f"--host {args.host} is not a loopback address, and the API runs code on this "
            "machine; bind 127.0.0.1, or pass --allow-remote to serve other machines anyway "
            "(put TLS in front: the token is the only protection)."
        )
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise CodeinterpError("`codeinterp serve` needs: pip install 'codeinterp[serve]'.") from exc
    from codeinterp.server.app import serve
    from codeinterp.server.settings import ServerSettings, default_data_dir
    from codeinterp.store import default_db_path

    token = args.token or os.environ.get("CODEINTERP_TOKEN") or secrets.token_urlsafe(24)
    settings = ServerSettings(
        token=token,
        model=args.model,
        executor=args.executor,
        db_path=args.db or default_db_path(),
        data_dir=args.data_dir or default_data_dir(),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        cell_timeout_s=args.timeout_s,
        protocol=args.protocol,
        max_rounds=args.max_rounds,
        model_options=_model_options(args),
        installer=_installer(args),
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"codeinterp serve: http://{shown}:{args.port}/#token={token}", flush=True)
    serve(settings, host=args.host, port=args.port)
    return 0


def _add_loop_options(parser: argparse.ArgumentParser, *, workspace: bool = True) -> None:
    from codeinterp.models import DEFAULT_MODEL

    parser.add_argument(
        "--model",
        default=os.environ.get("CODEINTERP_MODEL", DEFAULT_MODEL),
        metavar="SPEC",
        help="qwen-0.5b (embedded, default), qwen-1.5b, smollm2, llamacpp:/path/model.gguf, "
        "openai:MODEL, hf:org/name (default: $CODEINTERP_MODEL or %(default)s)",
    )
    parser.add_argument(
        "--executor",
        default=DEFAULT_EXECUTOR,
        choices=sorted(available_executors()),
        help=f"where the code runs (default: {DEFAULT_EXECUTOR})",
    )
    if workspace:
        parser.add_argument("--workspace", type=Path, metavar="DIR", help="the session's folder")
    parser.add_argument(
        "--protocol",
        choices=("markdown", "tools"),
        default="markdown",
        help="code in fenced blocks (best for small models) or native tool calls",
    )
    parser.add_argument("--max-rounds", type=int, default=6, metavar="N", help="default: 6")
    parser.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="per cell"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for local models")
    parser.add_argument(
        "--allow-install",
        metavar="MODULES",
        help="missing modules the supervisor may install, e.g. 'yaml=pyyaml,tabulate' "
        "(off by default)",
    )
    parser.add_argument("--wheelhouse", type=Path, metavar="DIR", help="install from these wheels")
    parser.add_argument("--package-index", metavar="URL", help="install from this index")
    parser.add_argument(
        "--base-url", metavar="URL", help="OpenAI-compatible server (default: $OPENAI_BASE_URL)"
    )
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeinterp",
        description="A code interpreter for your own language model: model-written code runs "
        "at once in a stateful, sandboxed session.",
    )
    parser.add_argument("--version", action="version", version=f"codeinterp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    run.add_argument(
        "--executor",
        default=DEFAULT_EXECUTOR,
        choices=sorted(available_executors()),
        help=f"where the code runs (default: {DEFAULT_EXECUTOR})",
    )
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
    run.add_argument(
        "--gateway-url",
        metavar="URL",
        help="with --executor gateway: the Jupyter (Enterprise) Gateway, e.g. "
        "http://127.0.0.1:8888; its token is read from $CODEINTERP_GATEWAY_TOKEN",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object per cell")
    run.add_argument(
        "--images-dir", type=Path, metavar="DIR", help="save plots and images there as files"
    )
    run.set_defaults(handler=cmd_exec)

    chat = commands.add_parser(
        "chat",
        help="talk with a model that runs code in a session",
        description="An interactive chat: the model writes code, the code runs at once in a "
        "sandboxed session, the results go back to the model, round after round.",
    )
    _add_loop_options(chat)
    chat.set_defaults(handler=cmd_chat)

    one_shot = commands.add_parser(
        "run",
        help="solve one task and exit",
        description="Give the model one task; it runs code until it answers. "
        "Exit status 0 when it answered, 1 otherwise.",
    )
    one_shot.add_argument("task", help="what to do, in words")
    one_shot.add_argument(
        "--json", action="store_true", help="print the event stream as JSON lines"
    )
    _add_loop_options(one_shot)
    one_shot.set_defaults(handler=cmd_run)

    from codeinterp.evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(commands, _add_loop_options, _model_options)

    doctor = commands.add_parser(
        "doctor",
        help="show which isolation layers this machine allows and what a session gets",
        description="Probe the machine's isolation features (namespaces, seccomp, cgroups), "
        "then open a real sandbox session and read back from the host what it got.",
    )
    doctor.set_defaults(handler=cmd_doctor)

    mcp = commands.add_parser(
        "mcp",
        help="serve sessions to MCP clients (Claude Desktop, IDEs, other agents)",
        description="An MCP server with tools to run Python in persistent sessions and to list, "
        "read and write their workspace files. Speaks stdio unless --http is given.",
    )
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp")
    mcp.add_argument("--host", default="127.0.0.1", help="with --http (default: %(default)s)")
    mcp.add_argument("--port", type=int, default=8765, help="with --http (default: %(default)s)")
    mcp.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (no auth!)"
    )
    mcp.add_argument(
        "--executor",
        default=DEFAULT_EXECUTOR,
        choices=sorted(available_executors()),
        help=f"where the code runs (default: {DEFAULT_EXECUTOR})",
    )
    mcp.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="default wall-clock limit per cell (default: %(default)g)",
    )
    mcp.add_argument(
        "--workspace-root",
        type=Path,
        metavar="DIR",
        help="keep each session's files in DIR/<session_id> (default: temporary, removed)",
    )
    mcp.set_defaults(handler=cmd_mcp)

    export = commands.add_parser(
        "export",
        help="write a stored conversation as a Jupyter notebook",
        description="Export a conversation stored by `codeinterp serve` as an .ipynb notebook: "
        "the user's messages and the model's prose as markdown, its code with outputs and "
        "plots as code cells.",
    )
    export.add_argument("conversation", nargs="?", metavar="CONVERSATION", help="its id")
    export.add_argument(
        "--ipynb", action="store_true", help="as a Jupyter notebook (the default and only format)"
    )
    export.add_argument(
        "-o", "--output", type=Path, metavar="PATH", help="default: <title or id>.ipynb"
    )
    export.add_argument("--list", action="store_true", help="list the stored conversations")
    export.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="the conversation database (default: ~/.local/share/codeinterp/codeinterp.db)",
    )
    export.set_defaults(handler=cmd_export)

    server = commands.add_parser(
        "serve",
        help="serve the HTTP API and the web page",
        description="The HTTP API (sessions, execute, files, conversations over Server-Sent "
        "Events, .ipynb export) and the web page. Every /api request needs the token printed "
        "at start.",
    )
    server.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    server.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    server.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    server.add_argument(
        "--token", help="the API token (default: $CODEINTERP_TOKEN, else a new random one)"
    )
    server.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="conversation database (default: ~/.local/share/codeinterp/codeinterp.db)",
    )
    server.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="conversation workspaces (default: ~/.local/share/codeinterp/workspaces)",
    )
    server.add_argument(
        "--max-upload-mb", type=float, default=100, metavar="N", help="default: %(default)g"
    )
    _add_loop_options(server, workspace=False)
    server.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status: int = args.handler(args)
    except CodeinterpError as exc:
        print(f"codeinterp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codeinterp: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
