"""Every /api route needs the token; the page's files do not; no CORS permission is given."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from codeinterp.server.app import create_app
from tests.server.conftest import TOKEN, running_app, settings_for

pytestmark = pytest.mark.anyio


def api_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every /api route, from the schema."""
    schema = create_app(settings_for(tmp_path)).openapi()
    found = [("GET", "/api/openapi.json")]
    for path, operations in schema["paths"].items():
        assert path.startswith("/api/")
        found.extend((method.upper(), re.sub(r"\{[^}]+\}", "x", path)) for method in operations)
    return found


async def test_every_api_route_refuses_a_request_without_the_token(tmp_path: Path) -> None:
    routes = api_routes(tmp_path)
    assert len(routes) >= 17  # every route of docs/http-api.md, and the schema
    async with running_app(settings_for(tmp_path)) as client:
        for method, path in routes:
            reply = await client.request(method, path, headers={"Authorization": ""})
            assert reply.status_code == 401, (method, path, reply.text)
            assert "Authorization: Bearer" in reply.json()["detail"]
            assert reply.headers["www-authenticate"] == "Bearer"


async def test_a_wrong_token_is_refused_with_a_message_naming_the_fix(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        for header in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN):
            reply = await client.get("/api/sessions", headers={"Authorization": header})
            assert reply.status_code == 401, header
            assert "--token" in reply.json()["detail"]
        assert (await client.get("/api/sessions")).status_code == 200


async def test_the_page_and_its_files_need_no_token(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        client.headers.pop("Authorization")
        page = await client.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert (await client.get("/static/does-not-exist.js")).status_code == 404


async def test_openapi_schema_is_served_under_api_behind_the_token(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        schema = (await client.get("/api/openapi.json")).json()
        assert schema["info"]["title"] == "codeinterp"
        assert "/api/sessions/{session_id}/execute" in schema["paths"]
        assert "/api/conversations/{conversation_id}/messages" in schema["paths"]
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/docs")).status_code == 404
        client.headers.pop("Authorization")
        assert (await client.get("/api/openapi.json")).status_code == 401


async def test_no_cors_permission_is_sent_to_other_origins(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        origin = {"Origin": "https://evil.example"}
        preflight = await client.options(
            "/api/sessions",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code in (401, 405)
        assert not any(h.startswith("access-control-") for h in preflight.headers)
        reply = await client.get("/api/sessions", headers=origin)
        assert not any(h.startswith("access-control-") for h in reply.headers)


async def test_info_names_version_model_and_executors(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        info = (await client.get("/api/info")).json()
    assert info["model"] == "scripted" and info["executor"] == "repl"
    assert {"sandbox", "repl"} <= set(info["executors"])
    assert isinstance(info["version"], str)


def test_settings_refuse_an_empty_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        settings_for(tmp_path, token="")


async def test_the_app_can_be_built_without_starting_anything(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    assert not (tmp_path / "codeinterp.db").exists()  # nothing happens before the lifespan
    assert isinstance(app.title, str)
    _ = httpx  # the ASGI transport is used through running_app
