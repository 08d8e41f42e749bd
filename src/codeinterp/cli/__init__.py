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
import sys
from collections.abc import Sequence

from codeinterp import __version__
from codeinterp.cli import exec_command, loop_commands, service_commands
from codeinterp.errors import CodeinterpError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeinterp",
        description="A code interpreter for your own language model: model-written code runs "
        "at once in a stateful, sandboxed session.",
    )
    parser.add_argument("--version", action="version", version=f"codeinterp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    exec_command.register(commands)
    loop_commands.register(commands)
    service_commands.register(commands)
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
