"""`codeinterp serve`, `mcp`, `export` and `doctor`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeinterp.errors import CodeinterpError
from codeinterp.executors.base import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    pass

from codeinterp.cli.executor_args import add_executor_arguments, executor_options
from codeinterp.cli.loop_commands import add_loop_options, model_options, package_installer


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
        executor_options=executor_options(args),
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
        executor_options={args.executor: executor_options(args)},
        db_path=args.db or default_db_path(),
        data_dir=args.data_dir or default_data_dir(),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        session_idle_timeout_s=args.session_idle_timeout,
        cell_timeout_s=args.timeout_s,
        protocol=args.protocol,
        max_rounds=args.max_rounds,
        model_options=model_options(args),
        installer=package_installer(args),
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"codeinterp serve: http://{shown}:{args.port}/#token={token}", flush=True)
    serve(settings, host=args.host, port=args.port)
    return 0


def _seconds(text: str) -> float:
    """A duration in seconds, 0 or more (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"give a number of seconds, 0 or more, not {text!r}")
    return value


def register(commands: Any) -> None:
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
    add_executor_arguments(mcp)
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
    server.add_argument(
        "--session-idle-timeout",
        type=_seconds,
        default=3600,
        metavar="S",
        help="close an API session nobody used (no cell, no file access) for S seconds; a "
        "conversation's session only goes dormant and reopens on the next use; 0: never "
        "(default: %(default)g)",
    )
    add_loop_options(server, workspace=False)
    server.set_defaults(handler=cmd_serve)
