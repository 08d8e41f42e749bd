"""Workspace files over HTTP, against the sandbox: upload, list, download, and their safety."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codeinterp.server.files import upload_name
from tests.server.conftest import running_app, settings_for

pytestmark = pytest.mark.anyio
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One app for the module (the sandbox's template takes a second or two to start)."""
    tmp_path = tmp_path_factory.mktemp("server")
    settings = settings_for(tmp_path, executor="sandbox", max_upload_bytes=LIMIT)
    async with running_app(settings) as client:
        yield client


@pytest.fixture
async def session(client: httpx.AsyncClient) -> str:
    reply = await client.post("/api/sessions", json={})
    session_id: str = reply.json()["id"]
    return session_id


async def workspace_of(client: httpx.AsyncClient, session: str) -> Path:
    """The session's workspace on the host, as the sandboxed code sees it (/workspace)."""
    code = "import os; print(os.getcwd())"
    reply = await client.post(f"/api/sessions/{session}/execute", json={"code": code})
    assert reply.json()["outputs"][0]["text"] == "/workspace\n"
    runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    workspace: Path = runtime.sessions.get(session).workspace
    return workspace


async def test_an_uploaded_file_is_read_by_code_in_the_session(
    client: httpx.AsyncClient, session: str
) -> None:
    csv = b"a,b\n1,2\n3,4\n"
    reply = await client.post(
        f"/api/sessions/{session}/files", files={"file": ("table.csv", csv, "text/csv")}
    )
    assert reply.status_code == 201
    assert reply.json() == [{"path": "table.csv", "size": len(csv)}]
    code = "import csv\nrows = list(csv.DictReader(open('/workspace/table.csv')))\nlen(rows)"
    run = await client.post(f"/api/sessions/{session}/execute", json={"code": code})
    assert run.json()["outputs"][0]["data"]["text/plain"] == "2"
    # ...and the session may change it: it belongs to the session's user.
    write = "open('table.csv', 'a').write('5,6\\n')"
    assert (await client.post(f"/api/sessions/{session}/execute", json={"code": write})).json()[
        "error"
    ] is None


async def test_several_files_into_a_folder_then_a_recursive_listing(
    client: httpx.AsyncClient, session: str
) -> None:
    files = [("file", ("one.txt", b"1")), ("file", ("two.txt", b"22"))]
    reply = await client.post(
        f"/api/sessions/{session}/files", files=files, data={"dir": "inputs/raw"}
    )
    assert reply.status_code == 201
    assert reply.json() == [
        {"path": "inputs/raw/one.txt", "size": 1},
        {"path": "inputs/raw/two.txt", "size": 2},
    ]
    code = "import os\nos.makedirs('out', exist_ok=True)\nopen('out/result.txt', 'w').write('ok')"
    await client.post(f"/api/sessions/{session}/execute", json={"code": code})
    listing = (await client.get(f"/api/sessions/{session}/files")).json()
    paths = [f["path"] for f in listing]
    assert {"inputs/raw/one.txt", "inputs/raw/two.txt", "out/result.txt"} <= set(paths)
    assert paths == sorted(paths)
    result = next(f for f in listing if f["path"] == "out/result.txt")
    assert result["size"] == 2 and result["modified"].endswith("+00:00")


async def test_download_gives_the_bytes_as_an_attachment(
    client: httpx.AsyncClient, session: str
) -> None:
    code = "open('report.json', 'w').write('{\"ok\": true}')"
    await client.post(f"/api/sessions/{session}/execute", json={"code": code})
    reply = await client.get(f"/api/sessions/{session}/files/report.json")
    assert reply.status_code == 200
    assert reply.content == b'{"ok": true}'
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["content-disposition"] == "attachment; filename*=UTF-8''report.json"
    missing = await client.get(f"/api/sessions/{session}/files/nope.txt")
    assert missing.status_code == 404 and "list the files" in missing.json()["detail"]


async def test_upload_names_are_sanitised(client: httpx.AsyncClient, session: str) -> None:
    names = ["../../escape.txt", "/etc/cron.d/job", "..\\win.txt", ".bashrc", " spaced.txt"]
    reply = await client.post(
        f"/api/sessions/{session}/files", files=[("file", (n, b"x")) for n in names]
    )
    assert reply.status_code == 201
    assert [f["path"] for f in reply.json()] == [
        "escape.txt",
        "job",
        "win.txt",
        "bashrc",
        "spaced.txt",
    ]
    workspace = await workspace_of(client, session)
    assert not (workspace.parent / "escape.txt").exists()
    for bad in ("../up", "/abs", "a/../../b", ".hidden"):
        refused = await client.post(
            f"/api/sessions/{session}/files", files={"file": ("f.txt", b"x")}, data={"dir": bad}
        )
        assert refused.status_code == 400, bad
    empty = await client.post(f"/api/sessions/{session}/files", files={"file": ("...", b"x")})
    assert empty.status_code == 400 and "rename" in empty.json()["detail"]


def test_control_characters_leave_upload_names() -> None:
    assert upload_name("tab\there\x00.txt\u200b") == "tabhere.txt"
    assert upload_name("C:\\Users\\me\\data.csv") == "data.csv"
    assert upload_name("x" * 300 + ".txt") == "x" * 255


async def test_download_paths_cannot_climb_out(client: httpx.AsyncClient, session: str) -> None:
    for path in ("%2e%2e/%2e%2e/etc/passwd", "a/%2e%2e/%2e%2e/x", "%2Fetc%2Fpasswd"):
        reply = await client.get(f"/api/sessions/{session}/files/{path}")
        assert reply.status_code in (400, 404), path
        assert "root:" not in reply.text


async def test_a_symlink_planted_in_the_workspace_is_never_followed(
    client: httpx.AsyncClient, session: str
) -> None:
    workspace = await workspace_of(client, session)
    os.symlink("/etc", workspace / "etc")
    os.symlink("/etc/passwd", workspace / "passwd")
    (workspace / "real.txt").write_text("mine")
    for path in ("etc/passwd", "passwd", "etc"):
        reply = await client.get(f"/api/sessions/{session}/files/{path}")
        assert reply.status_code == 403, path
        assert "symbolic link" in reply.json()["detail"]
        assert "root:" not in reply.text
    listing = [f["path"] for f in (await client.get(f"/api/sessions/{session}/files")).json()]
    assert listing == ["real.txt"]
    # An upload into the linked folder, or over the linked file, does not write through it.
    into = await client.post(
        f"/api/sessions/{session}/files", files={"file": ("x.txt", b"x")}, data={"dir": "etc"}
    )
    assert into.status_code == 403
    over = await client.post(f"/api/sessions/{session}/files", files={"file": ("passwd", b"x")})
    assert over.status_code == 201
    assert not (workspace / "passwd").is_symlink()
    assert Path("/etc/passwd").read_bytes() != b"x"


async def test_a_fifo_in_the_workspace_does_not_hang_a_download(
    client: httpx.AsyncClient, session: str
) -> None:
    workspace = await workspace_of(client, session)
    os.mkfifo(workspace / "pipe")
    reply = await client.get(f"/api/sessions/{session}/files/pipe")
    assert reply.status_code == 404 and "regular file" in reply.json()["detail"]


async def test_an_upload_over_the_limit_is_a_413(client: httpx.AsyncClient, session: str) -> None:
    too_big = b"x" * (LIMIT + 1)
    reply = await client.post(f"/api/sessions/{session}/files", files={"file": ("big", too_big)})
    assert reply.status_code == 413
    assert "--max-upload-mb" in reply.json()["detail"]
    much_too_big = b"x" * (LIMIT * 4)
    reply = await client.post(
        f"/api/sessions/{session}/files", files={"file": ("huge", much_too_big)}
    )
    assert reply.status_code == 413
    listing = (await client.get(f"/api/sessions/{session}/files")).json()
    assert listing == []  # nothing half-written stays behind
    fits = await client.post(f"/api/sessions/{session}/files", files={"file": ("ok", b"x" * LIMIT)})
    assert fits.status_code == 201


async def test_files_of_an_unknown_session_are_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/sessions/nope/files")).status_code == 404
    assert (await client.get("/api/sessions/nope/files/a.txt")).status_code == 404
