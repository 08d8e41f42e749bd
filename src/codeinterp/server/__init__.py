"""`codeinterp serve`: the HTTP API (docs/http-api.md) and the web page's static files.

Needs the `serve` extra (`pip install 'codeinterp[serve]'`). Modules: app.py (wiring, errors,
lifespan), auth.py (the token), runtime.py (resources and worker threads), sessions.py (the
session registry), expiry.py (releases idle sessions), files.py (safe workspace paths),
conversations.py (the loop, stored), turns.py (one turn at a time, interrupts), sse.py
(Server-Sent Events from threads), routes/ (one module per part of the API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codeinterp.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings) -> FastAPI:
    """See `codeinterp.server.app.create_app` (imported on use: it needs FastAPI)."""
    from codeinterp.server.app import create_app as create

    return create(settings)
