"""Bearer-token auth for every /api route.

The service runs code on this machine, so nothing under /api answers without the token the
service printed at start. Comparison is constant-time (`hmac.compare_digest`), and a refusal
says how to get it right. The token travels only in the `Authorization` header, never in a URL,
where logs and browser history would keep it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(
    auto_error=False,
    description="The token `codeinterp serve` printed at start (or its --token).",
)

MISSING = (
    "Missing token: send the header `Authorization: Bearer <token>` with the token that "
    "`codeinterp serve` printed at start (after #token= in its URL), or the one it was given "
    "with --token / $CODEINTERP_TOKEN."
)
WRONG = (
    "Wrong token: use the one `codeinterp serve` printed at start (after #token= in its URL), "
    "or the one it was given with --token / $CODEINTERP_TOKEN; it changes at every start "
    "unless given."
)


def token_checker(token: str) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that accepts only `Authorization: Bearer <token>`."""
    expected = token.encode()

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None:
            raise _unauthorized(MISSING)
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise _unauthorized(WRONG)

    return require_token


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )
