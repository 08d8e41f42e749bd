"""Wiring: the FastAPI app of `codeinterp serve`, its lifespan, its errors, and `serve()`.

`create_app(settings)` builds an app and nothing else; its resources (store, executor, model,
the reaper of idle sessions) are made by the lifespan at start-up and closed at shutdown, so an
app can be built, tested in-process and thrown away. The /api routes all need the token; the
page's static files do not. No CORS middleware: a page from another origin gets no permission
to call the API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from codeinterp import __version__
from codeinterp.errors import (
    CodeinterpError,
    ConfigError,
    DependencyMissing,
    RemoteWorkspace,
    SessionBusy,
    SessionClosed,
    SessionStartError,
)
from codeinterp.server import files
from codeinterp.server.auth import token_checker
from codeinterp.server.expiry import idle_reaper
from codeinterp.server.routes import conversations, service, sessions
from codeinterp.server.routes import files as file_routes
from codeinterp.server.runtime import ModelUnavailable, Runtime
from codeinterp.server.sessions import OwnedByConversation, UnknownSession
from codeinterp.server.settings import ServerSettings
from codeinterp.server.turns import TurnRunning
from codeinterp.store import NotFound

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("codeinterp.server")

# Our exceptions -> HTTP statuses (the first matching class wins; order subclasses first).
STATUS_OF: list[tuple[type[Exception], int]] = [
    (files.UploadTooLarge, 413),
    (files.LinkRefused, 403),
    (UnknownSession, 404),
    (NotFound, 404),
    (files.NoSuchFile, 404),
    (files.UnsafePath, 400),
    (ConfigError, 400),
    (SessionBusy, 409),
    (RemoteWorkspace, 409),
    (TurnRunning, 409),
    (OwnedByConversation, 409),
    (SessionClosed, 409),
    (SessionStartError, 503),
    (ModelUnavailable, 503),
    (DependencyMissing, 503),
]

NO_PAGE = """<!doctype html><meta charset="utf-8"><title>codeinterp</title>
<p>The codeinterp service is running, but its web page is not installed
(<code>codeinterp/server/static/index.html</code> is missing). The HTTP API is under
<code>/api</code>; its schema is <code>/api/openapi.json</code>.</p>"""


def create_app(settings: ServerSettings) -> FastAPI:
    """The app; its lifespan opens the store and the executor, and closes them after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        try:
            await runtime.run(runtime.start)
            async with idle_reaper(runtime):
                yield
            await runtime.run(runtime.stop_work)
            await runtime.wait_for_work()
        finally:
            await runtime.run(runtime.close)

    app = FastAPI(
        title="codeinterp",
        version=__version__,
        summary="Run model-written code at once in stateful, sandboxed sessions.",
        lifespan=lifespan,
        openapi_url=None,  # served under /api, behind the token (routes/service.py)
        docs_url=None,
        redoc_url=None,
    )
    api = APIRouter(prefix="/api", dependencies=[Depends(token_checker(settings.token))])
    for module in (service, sessions, file_routes, conversations):
        api.include_router(module.router)
    app.include_router(api)
    _add_error_handlers(app)
    _add_page(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def codeinterp_error(request: Request, exc: Exception) -> Response:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 500)
        if status == 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        detail = "Bad request: " + "; ".join(problems) + ". See /api/openapi.json for the shapes."
        return JSONResponse({"detail": detail}, status_code=400)

    app.add_exception_handler(CodeinterpError, codeinterp_error)
    app.add_exception_handler(RequestValidationError, bad_request)


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NO_PAGE)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


def serve(settings: ServerSettings, *, host: str, port: int, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted (Ctrl-C or SIGTERM shut it down cleanly)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
