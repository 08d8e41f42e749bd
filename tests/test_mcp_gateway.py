"""The MCP tools over a `gateway` executor, whose workspaces are on the gateway's host.

The server is driven in-process by the SDK's own client, against a real Jupyter Kernel Gateway
on loopback (tests/conftest.py); the command line has no gateway options for `codeinterp mcp`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KernelGateway

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.types import CallToolResult, TextContent  # noqa: E402

from codeinterp.executors.gateway import GatewayExecutor  # noqa: E402
from codeinterp.mcp_server import SessionPool, build_server  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pool(kernel_gateway: KernelGateway) -> Iterator[SessionPool]:
    executor = GatewayExecutor(kernel_gateway.url, token=kernel_gateway.token, timeout_s=30)
    pool = SessionPool(executor, None)
    try:
        yield pool
    finally:
        pool.close_all()
        executor.close()


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def test_file_tools_refuse_a_remote_workspace_and_point_to_run_python(
    pool: SessionPool,
) -> None:
    async with Client(build_server(pool, 30)) as client:
        ran = await client.call_tool(
            "run_python",
            {"code": "import os; open('made.txt', 'w').write('x'); print(os.getcwd())"},
        )
        assert not ran.is_error, text_of(ran)
        workspace = Path(text_of(ran).strip())
        refusals = [
            await client.call_tool("list_files", {}),
            await client.call_tool("read_file", {"path": "made.txt"}),
            await client.call_tool("write_file", {"path": "planted.txt", "content": "x"}),
        ]
        for refused in refusals:
            assert refused.is_error
            assert "'gateway' session live on the remote host" in text_of(refused)
            assert "call run_python" in text_of(refused)
        listed = await client.call_tool("run_python", {"code": "sorted(os.listdir())"})
    assert not (workspace / "planted.txt").exists()
    assert text_of(listed) == "['made.txt']"
