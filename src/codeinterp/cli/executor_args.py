"""The options of every command that opens sessions: which executor, and where a gateway is."""

from __future__ import annotations

import argparse
import os
from typing import Any

from codeinterp.errors import CodeinterpError
from codeinterp.executors import available_executors

DEFAULT_EXECUTOR = "sandbox"
GATEWAY_TOKEN_ENV = "CODEINTERP_GATEWAY_TOKEN"


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        default=DEFAULT_EXECUTOR,
        choices=sorted(available_executors()),
        help=f"where the code runs (default: {DEFAULT_EXECUTOR})",
    )
    parser.add_argument(
        "--gateway-url",
        metavar="URL",
        help="with --executor gateway: the Jupyter (Enterprise) Gateway, e.g. "
        f"http://127.0.0.1:8888; its token is read from ${GATEWAY_TOKEN_ENV}",
    )


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for `get_executor(args.executor, ...)` beyond the cell timeout."""
    if args.executor == "gateway":
        if not args.gateway_url:
            raise CodeinterpError(
                "--executor gateway needs --gateway-url URL (and the gateway's token in "
                f"${GATEWAY_TOKEN_ENV} if it has one)."
            )
        return {"url": args.gateway_url, "token": os.environ.get(GATEWAY_TOKEN_ENV)}
    if args.gateway_url:
        raise CodeinterpError("--gateway-url is only for --executor gateway.")
    return {}
