"""The MCP tools' access to a session's workspace files: list, read, write.

Every path is opened component by component beneath the workspace, never following a symbolic
link, so nothing outside it can be reached (no check-then-use race). Only executors whose
workspace is a directory on this machine have files here; for the others (`gateway`: the
workspace is on the remote Jupyter server) the tools refuse and point to `run_python`.

These functions block (disk I/O): the tools call them in worker threads.
"""

from __future__ import annotations

import base64
import codecs
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ContentBlock, ImageContent, TextContent

from codeinterp.errors import RemoteWorkspace
from codeinterp.executors import Executor

MAX_READ_CHARS = 100_000  # of a text file returned by read_file
MAX_READ_BYTES = 8 << 20  # larger files are described, not returned
MAX_LISTED = 1000
SANDBOX_WORKSPACE = "/workspace"  # where the sandbox executor shows the workspace to the code
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}  # sniffed from the content, not the name
READ_WITH_CODE = "call run_python, e.g. print(open('data.csv').read())"


def ensure_local_files(executor: Executor) -> None:
    """Refuse the file tools for an executor whose workspaces are not on this machine."""
    if not executor.capabilities.local_workspace:
        raise ToolError(str(RemoteWorkspace(executor.name, READ_WITH_CODE)))


def _parts(workspace: Path, path: str) -> list[str]:
    pure = PurePosixPath(path.strip())
    if pure.is_absolute():
        for base in (str(workspace), SANDBOX_WORKSPACE):
            if pure.is_relative_to(base):
                pure = pure.relative_to(base)
                break
        else:
            raise ToolError(f"{path!r} is outside the workspace; use a relative path.")
    parts = [p for p in pure.parts if p != "."]
    if ".." in parts:
        raise ToolError(f"{path!r}: '..' is not allowed; use a path inside the workspace.")
    if not parts:
        raise ToolError("Give a file path inside the workspace.")
    return parts


def _open_in(workspace: Path, path: str, flags: int) -> int:
    """Open `path` beneath `workspace` one component at a time, following no symbolic link
    (no check-then-use race); with O_CREAT, missing folders are made, owned like the
    workspace. Returns the open regular file."""
    parts = _parts(workspace, path)
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    owner = os.fstat(fd)
    try:
        for name in parts[:-1]:
            if flags & os.O_CREAT:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    _own(name, fd, owner)
                except FileExistsError:
                    pass
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        child = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=fd)
        if flags & os.O_CREAT:
            _own(parts[-1], fd, owner)
        os.close(fd)
        fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ToolError(f"{path!r} is not a regular file.")
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ToolError(f"{path!r}: a part of it is a symbolic link or not a folder.") from exc
        raise ToolError(f"{path!r}: {exc.strerror or exc}.") from exc
    except BaseException:
        os.close(fd)
        raise


def _own(name: str, dir_fd: int, owner: os.stat_result) -> None:
    """On a root host the session runs as its own uid: give it what we create."""
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(name, owner.st_uid, owner.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def read_file_blocks(workspace: Path, path: str) -> list[ContentBlock]:
    fd = _open_in(workspace, path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        size, data = os.fstat(fd).st_size, f.read(MAX_READ_BYTES + 1)
    mime = next((m for magic, m in _IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if mime is not None and len(data) <= MAX_READ_BYTES:
        note = TextContent(type="text", text=f"{path}: {mime}, {len(data)} bytes")
        encoded = base64.b64encode(data).decode("ascii")
        return [note, ImageContent(type="image", data=encoded, mime_type=mime)]
    try:  # an incremental decoder forgives a character cut at the end of what was read
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:MAX_READ_BYTES])
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        hint = "inspect it with run_python, e.g. open(path, 'rb')"
        return [TextContent(type="text", text=f"{path}: binary, {size} bytes; {hint}.")]
    if len(text) > MAX_READ_CHARS or size > MAX_READ_BYTES:
        text = text[:MAX_READ_CHARS] + f"\n…[cut: the file has {size} bytes]"
    return [TextContent(type="text", text=text)]


def write_file_text(workspace: Path, path: str, content: str) -> str:
    data = content.encode("utf-8")
    fd = _open_in(workspace, path, os.O_WRONLY | os.O_CREAT)
    with os.fdopen(fd, "wb") as f:
        f.truncate()  # only now that it is known to be a regular file of ours
        f.write(data)
    return f"Wrote {len(data)} bytes to {'/'.join(_parts(workspace, path))}."


def list_workspace(workspace: Path) -> str:
    entries: list[tuple[tuple[str, ...], str]] = []
    for top, dirs, files in os.walk(workspace):  # never descends into linked folders
        for name in dirs + files:
            full = Path(top, name)
            try:
                rel, info = full.relative_to(workspace), full.lstat()
                line = f"{rel}  ({info.st_size} bytes)"
                if stat.S_ISLNK(info.st_mode):
                    line = f"{rel} -> {os.readlink(full)}"
                elif stat.S_ISDIR(info.st_mode):
                    line = f"{rel}/"
            except OSError:  # removed while we looked
                continue
            entries.append((rel.parts, line))
        if len(entries) >= MAX_LISTED:
            break
    lines = [line for _, line in sorted(entries)[:MAX_LISTED]]
    more = f"\n…[stopped after {MAX_LISTED} entries]" if len(entries) >= MAX_LISTED else ""
    return "\n".join(lines) + more if lines else "(the workspace is empty)"
