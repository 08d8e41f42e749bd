"""Files of a session whose workspace is on another host (`gateway`): refused, not guessed.

Against a real Jupyter Kernel Gateway on loopback (tests/conftest.py). Its kernels happen to run
on this machine, so the gateway-side workspace is reachable here too: the test can show that
the file routes do not touch it, rather than failing for want of the directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import KernelGateway
from tests.server.conftest import running_app, settings_for

pytestmark = pytest.mark.anyio


async def test_the_file_routes_refuse_a_gateway_session_and_leave_its_workspace_alone(
    tmp_path: Path, kernel_gateway: KernelGateway
) -> None:
    options = {"url": kernel_gateway.url, "token": kernel_gateway.token}
    settings = settings_for(tmp_path, executor="gateway", executor_options={"gateway": options})
    async with running_app(settings) as client:
        created = await client.post("/api/sessions", json={})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        code = "import os; open('made.txt', 'w').write('by code'); print(os.getcwd())"
        ran = (await client.post(f"/api/sessions/{sid}/execute", json={"code": code})).json()
        workspace = Path(ran["outputs"][0]["text"].strip())
        assert (workspace / "made.txt").is_file()  # on loopback it is also a local directory

        listing = await client.get(f"/api/sessions/{sid}/files")
        download = await client.get(f"/api/sessions/{sid}/files/made.txt")
        upload = await client.post(
            f"/api/sessions/{sid}/files", files={"file": ("planted.txt", b"from outside")}
        )
        for reply in (listing, download, upload):
            assert reply.status_code == 409, reply.text
            detail = reply.json()["detail"]
            assert "'gateway' session live on the remote host" in detail
            assert f"POST /api/sessions/{sid}/execute" in detail

        assert not (workspace / "planted.txt").exists()
        seen = await client.post(
            f"/api/sessions/{sid}/execute", json={"code": "sorted(os.listdir())"}
        )
    assert seen.json()["outputs"][0]["data"]["text/plain"] == "['made.txt']"
