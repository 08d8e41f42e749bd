"""Helpers for the server's tests: an app with its lifespan running, a client, SSE parsing.

Most tests drive the app in-process through httpx's ASGI transport (which does not run the
lifespan, so `running_app` enters it explicitly); test_real_server.py runs the real command.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeinterp.models.scripted import ScriptedModel
from codeinterp.server.app import create_app
from codeinterp.server.settings import ServerSettings

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(tmp_path: Path, **changes: Any) -> ServerSettings:
    """Settings with everything under `tmp_path`; `repl` unless a test asks for the sandbox."""
    base = ServerSettings(
        token=TOKEN,
        model="scripted",
        executor="repl",
        db_path=tmp_path / "codeinterp.db",
        data_dir=tmp_path / "workspaces",
        cell_timeout_s=30,
    )
    return replace(base, **changes)


def scripted(model: ScriptedModel) -> Callable[[], ScriptedModel]:
    return lambda: model


@asynccontextmanager
async def running_app(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new app whose lifespan (store, executor) runs for the block."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=AUTH, timeout=60
        ) as client:
            yield client


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events body; comments (keep-alives) skipped."""
    events = []
    for block in text.split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        if data is not None:
            events.append((name, data))
    return events
