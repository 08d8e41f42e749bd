"""About the service itself: what it runs, and its OpenAPI schema (behind the token too)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from codeinterp import __version__
from codeinterp.server.deps import RuntimeDep
from codeinterp.server.schemas import Info

router = APIRouter(tags=["service"])


@router.get("/info", response_model=Info)
async def info(rt: RuntimeDep) -> Info:
    return Info(
        version=__version__,
        model=rt.settings.model,
        executor=rt.settings.executor,
        executors=rt.executor_names,
    )


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
