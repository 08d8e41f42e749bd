"""`codeinterp chat`, `run` and `eval`: the loop with a model, from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeinterp.executors import get_executor
from codeinterp.executors.base import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from codeinterp.agent import Event, Interpreter
    from codeinterp.agent.packages import PackageInstaller

from codeinterp.cli.executor_args import add_executor_arguments, executor_options


def model_options(args: argparse.Namespace) -> dict[str, object]:
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

    options = executor_options(args)  # checked before a model takes seconds to load
    model = get_model(args.model, **model_options(args))
    stack.callback(model.close)
    executor = stack.enter_context(get_executor(args.executor, timeout_s=args.timeout_s, **options))
    session = stack.enter_context(executor.open(workspace=args.workspace))
    return Interpreter(
        model,
        session,
        protocol=args.protocol,
        max_rounds=args.max_rounds,
        installer=package_installer(args),
    )


def package_installer(args: argparse.Namespace) -> PackageInstaller | None:
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


def add_loop_options(parser: argparse.ArgumentParser, *, workspace: bool = True) -> None:
    from codeinterp.models import DEFAULT_MODEL

    parser.add_argument(
        "--model",
        default=os.environ.get("CODEINTERP_MODEL", DEFAULT_MODEL),
        metavar="SPEC",
        help="qwen-0.5b (embedded, default), qwen-1.5b, smollm2, llamacpp:/path/model.gguf, "
        "openai:MODEL, hf:org/name (default: $CODEINTERP_MODEL or %(default)s)",
    )
    add_executor_arguments(parser)
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


def register(commands: Any) -> None:
    chat = commands.add_parser(
        "chat",
        help="talk with a model that runs code in a session",
        description="An interactive chat: the model writes code, the code runs at once in a "
        "sandboxed session, the results go back to the model, round after round.",
    )
    add_loop_options(chat)
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
    add_loop_options(one_shot)
    one_shot.set_defaults(handler=cmd_run)

    from codeinterp.evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(commands, add_loop_options, model_options)
