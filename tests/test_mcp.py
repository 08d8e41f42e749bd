"""`codeinterp mcp`, driven by the official SDK's own client over stdio and streamable HTTP.

Each test runs against both transports: over stdio a fresh server per test (spawned by the
SDK's stdio client), over HTTP one server subprocess per module with a session id per test.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from codeinterp.cli import main
from tests.conftest import process_gone, process_tree

pytest.importorskip("mcp")

from mcp import Client, MCPError, StdioServerParameters  # noqa: E402
from mcp.types import CallToolResult, ImageContent, TextContent  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVER = [sys.executable, "-m", "codeinterp.cli", "mcp"]
TOOLS = {"run_python", "list_files", "read_file", "write_file", "restart_session", "close_session"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_http(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([*SERVER, "--http", "--port", str(port), *extra])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the HTTP server did not start listening")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    proc, url = _start_http()
    yield url
    _stop(proc)


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest) -> Callable[[], Client]:
    if request.param == "http":
        url: str = request.getfixturevalue("http_url")
        return lambda: Client(url)
    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
    return lambda: Client(params)


@pytest.fixture
def sid() -> str:
    """A session id of its own, since the HTTP server is shared by the module's tests."""
    return f"t-{uuid.uuid4().hex[:8]}"


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool(tool, arguments)


async def run(client: Client, code: str, sid: str, **extra: Any) -> CallToolResult:
    return await call(client, "run_python", code=code, session_id=sid, **extra)


async def test_lists_the_tools(connect: Callable[[], Client]) -> None:
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    schema = tools["run_python"].input_schema
    assert schema["required"] == ["code"]
    assert set(schema["properties"]) == {"code", "session_id", "timeout_s"}
    assert tools["run_python"].description and "persistent" in tools["run_python"].description


async def test_state_persists_between_calls(connect: Callable[[], Client], sid: str) -> None:
    async with connect() as client:
        first = await run(client, "x = 41", sid)
        assert not first.is_error and text_of(first) == "[no output]"
        second = await run(client, "print('x is', x)\nx + 1", sid)
    assert not second.is_error
    assert text_of(second) == "x is 41\n42"


async def test_a_plot_comes_back_as_a_png_image(connect: Callable[[], Client], sid: str) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 4, 9]); plt.title('squares'); print('plotted'); plt.show()"
    )
    async with connect() as client:
        result = await run(client, code, sid)
    assert not result.is_error
    images = [b for b in result.content if isinstance(b, ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")
    assert text_of(result) == "plotted"  # no "[image/png …]" placeholder in the text


async def test_an_exception_is_a_result_to_read(connect: Callable[[], Client], sid: str) -> None:
    async with connect() as client:
        result = await run(client, "print('before')\n1 / 0", sid)
    assert not result.is_error  # the tool worked; the code raised
    text = text_of(result)
    assert text.startswith("before\nError:")
    assert "Traceback" in text and text.endswith("ZeroDivisionError: division by zero")


async def test_a_timeout_says_so_and_the_next_call_works(
    connect: Callable[[], Client], sid: str
) -> None:
    async with connect() as client:
        await run(client, "kept = 'yes'", sid)
        started = time.monotonic()
        result = await run(client, "while True: pass", sid, timeout_s=1)
        assert time.monotonic() - started < 15
        assert result.is_error
        assert "Error: the cell hit its time limit of 1 s and was interrupted." in text_of(result)
        after = await run(client, "print(6 * 7)", sid)
        assert not after.is_error and text_of(after) == "42"
        assert text_of(await run(client, "kept", sid)) == "'yes'"


async def test_a_cancelled_call_interrupts_its_cell(
    connect: Callable[[], Client], sid: str
) -> None:
    async with connect() as client:
        await run(client, "x = 41", sid)
        started = time.monotonic()
        with pytest.raises(MCPError, match="timed out"):  # the client gives up, and says so
            await client.call_tool(
                "run_python",
                {"code": "import time; time.sleep(60)", "session_id": sid},
                read_timeout_seconds=1,
            )
        after = await run(client, "x + 1", sid)  # not queued behind a minute of sleep
        assert text_of(after) == "42" and time.monotonic() - started < 15


async def test_files_written_read_and_listed(connect: Callable[[], Client], sid: str) -> None:
    async with connect() as client:
        wrote = await call(
            client, "write_file", path="data/in.txt", content="héllo\n", session_id=sid
        )
        assert not wrote.is_error and "data/in.txt" in text_of(wrote)
        code = (
            "text = open('data/in.txt', encoding='utf-8').read()\n"
            "open('data/in.txt', 'a').write('more\\n')\n"  # the session may change our file
            "open('out.csv', 'w').write('a,b\\n1,2\\n')\n"
            "text.upper()"
        )
        result = await run(client, code, sid)
        assert not result.is_error and text_of(result) == "'HÉLLO\\n'"
        listing = text_of(await call(client, "list_files", session_id=sid))
        assert listing.splitlines() == ["data/", "data/in.txt  (12 bytes)", "out.csv  (8 bytes)"]
        read = await call(client, "read_file", path="data/in.txt", session_id=sid)
        assert not read.is_error and text_of(read) == "héllo\nmore\n"
        absolute = await call(client, "read_file", path="/workspace/out.csv", session_id=sid)
        assert text_of(absolute) == "a,b\n1,2\n"


async def test_read_file_images_and_binaries(connect: Callable[[], Client], sid: str) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2]); plt.savefig('fig.png'); plt.close()\n"
        "open('blob.bin', 'wb').write(bytes(range(256)))"
    )
    async with connect() as client:
        await run(client, code, sid)
        image = await call(client, "read_file", path="fig.png", session_id=sid)
        blob = await call(client, "read_file", path="blob.bin", session_id=sid)
        missing = await call(client, "read_file", path="nope.txt", session_id=sid)
    pngs = [b for b in image.content if isinstance(b, ImageContent)]
    assert len(pngs) == 1 and base64.b64decode(pngs[0].data).startswith(b"\x89PNG")
    assert not blob.is_error and "binary, 256 bytes" in text_of(blob)
    assert missing.is_error and "No such file" in text_of(missing)


async def test_paths_stay_inside_the_workspace(connect: Callable[[], Client], sid: str) -> None:
    async with connect() as client:
        await run(
            client, "import os; os.symlink('/etc', 'etc'); os.symlink('/etc/hostname', 'h')", sid
        )
        for path in ("../x", "/etc/hostname", "etc/hostname", "h", "a/../../x"):
            read = await call(client, "read_file", path=path, session_id=sid)
            assert read.is_error, path
        write = await call(client, "write_file", path="etc/evil", content="x", session_id=sid)
        assert write.is_error
        overwrite = await call(client, "write_file", path="h", content="x", session_id=sid)
        assert overwrite.is_error and "symbolic link" in text_of(overwrite)
        listing = text_of(await call(client, "list_files", session_id=sid))
    assert "etc -> /etc" in listing and "hostname" not in listing.replace("/etc/hostname", "")


async def test_restart_clears_variables_but_keeps_files(
    connect: Callable[[], Client], sid: str
) -> None:
    async with connect() as client:
        await run(client, "x = 1; open('keep.txt', 'w').write('kept')", sid)
        restarted = await call(client, "restart_session", session_id=sid)
        assert not restarted.is_error
        gone = await run(client, "x", sid)
        assert "NameError" in text_of(gone)
        assert text_of(await run(client, "open('keep.txt').read()", sid)) == "'kept'"


async def test_two_session_ids_are_independent(connect: Callable[[], Client], sid: str) -> None:
    other = sid + "-b"
    async with connect() as client:
        await run(client, "x = 'a'; open('only-a.txt', 'w').write('a')", sid)
        await run(client, "x = 'b'", other)
        assert text_of(await run(client, "x", sid)) == "'a'"
        assert text_of(await run(client, "x", other)) == "'b'"
        assert "only-a.txt" not in text_of(await call(client, "list_files", session_id=other))
        closed = await call(client, "close_session", session_id=other)
        assert not closed.is_error and "closed" in text_of(closed)
        assert text_of(await run(client, "x", sid)) == "'a'"
        fresh = await run(client, "x", other)  # the id opens a new session
        assert "NameError" in text_of(fresh)
        bad = await run(client, "1", "../escape")
        assert bad.is_error


def test_refuses_a_non_loopback_host_without_allow_remote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mcp", "--http", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


@pytest.mark.anyio
async def test_sigterm_closes_every_session() -> None:
    proc, url = _start_http()
    try:
        async with Client(url) as client:
            for sid in ("one", "two"):
                assert text_of(await run(client, "1 + 1", sid)) == "2"
        tree = process_tree(proc.pid)
        assert len(tree) >= 3  # the server, the sandbox template, the sessions
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert all(process_gone(pid) for pid in tree)
