"""Files of a session's workspace, reached by name over HTTP without escaping the workspace.

A workspace is written by code we do not trust: it may hold symbolic links to `/etc`, FIFOs,
or names swapped between two of our calls. So every path is walked one component at a time
with `openat(..., O_NOFOLLOW)` from a descriptor of the workspace itself: a symbolic link is
never followed (not even one that points back inside), nothing outside can be reached however
the tree changes meanwhile, and only regular files are read. Uploads are written under a
temporary name and renamed into place, which replaces a planted link instead of writing
through it.

These functions block (disk I/O): the routes call them in worker threads.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from codeinterp.errors import CodeinterpError

MAX_NAME_BYTES = 255
CHUNK_BYTES = 1 << 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(CodeinterpError, ValueError):
    """A name or path that could leave the workspace, or that we refuse to create (400)."""


class NoSuchFile(CodeinterpError, LookupError):
    """Nothing of that name in the workspace, or not a regular file (404)."""


class LinkRefused(CodeinterpError, PermissionError):
    """The path goes through a symbolic link; links are never followed (403)."""


class UploadTooLarge(CodeinterpError):
    """The upload is over `--max-upload-mb` (413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"Upload too large: the limit is {limit_bytes / 2**20:g} MB per request. "
            "Send fewer or smaller files, or restart the service with a larger --max-upload-mb."
        )


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def relative_parts(path: str, *, new: bool = False) -> list[str]:
    """The components of a workspace-relative `path`; refuses anything that could leave it.

    `new`: the path names things we are about to create, which may not start with a dot.
    """
    if _has_control(path):
        raise UnsafePath("The path contains control characters; use a plain file name.")
    if path.startswith("/") or "\\" in path:
        raise UnsafePath(
            f"{path!r} is not a relative path inside the workspace; give a path such as "
            "'data/table.csv' (forward slashes, no leading slash)."
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise UnsafePath(f"{path!r} goes up with '..'; paths stay inside the workspace.")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise UnsafePath(f"A name in {path!r} is longer than {MAX_NAME_BYTES} bytes.")
        if new and part.startswith("."):
            raise UnsafePath(f"{part!r} starts with a dot; new files and folders may not.")
    return parts


def upload_name(raw: str) -> str:
    """A safe file name from what a client sent: its last component, cleaned.

    Browsers send bare names, some clients whole paths (with either slash); control characters
    and leading dots and spaces go. Refuses what is left empty.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))
    name = name.strip().lstrip(". ").strip()
    if not name or name == "..":
        raise UnsafePath(f"Cannot make a safe file name of {raw!r}; rename the file and retry.")
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    return name


def _open_dir(root: Path, parts: list[str], *, create: bool = False) -> int:
    """A descriptor of `root/parts...`, every component opened without following links."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    owner = _owner(fd) if create else None
    try:
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if owner is not None:
                        os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(fd, part, "/".join(parts[: i + 1]), exc) from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refusal(dir_fd: int, name: str, shown: str, exc: OSError) -> CodeinterpError:
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return LinkRefused(
            f"{shown!r} is a symbolic link; links in the workspace are never followed. "
            "Copy the file into the workspace (e.g. with code in the session) instead."
        )
    if exc.errno == errno.ENOTDIR:
        return NoSuchFile(f"{shown!r} is not a folder in the workspace.")
    if exc.errno == errno.ENOENT:
        return NoSuchFile(f"No {shown!r} in the workspace; list the files to see what is there.")
    return NoSuchFile(f"Cannot open {shown!r} in the workspace: {exc.strerror}.")


def _owner(dir_fd: int) -> tuple[int, int] | None:
    """Who should own what we create: the workspace's owner, when we are root and it is not.

    A sandbox session runs as its own unprivileged uid; a file root uploads must stay writable
    for it.
    """
    if os.getuid() != 0:
        return None
    st = os.fstat(dir_fd)
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def list_files(root: Path) -> list[dict[str, object]]:
    """Every regular file beneath `root`: relative path, size, modified time (sorted by path).

    Symbolic links are neither listed nor descended into.
    """
    found: list[dict[str, object]] = []
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        relative = os.path.relpath(dirpath, root)
        for name in filenames:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISREG(st.st_mode):
                path = name if relative == "." else f"{relative}/{name}"
                found.append({"path": path, "size": st.st_size, "modified": _iso(st.st_mtime)})
        dirnames.sort()
    found.sort(key=lambda f: str(f["path"]))
    return found


@dataclass
class OpenFile:
    """A regular file of the workspace, opened for reading; iterate it, then it closes."""

    fd: int
    name: str
    size: int
    """At most this many bytes are read: the size announced in Content-Length."""
    _read: int = 0

    def read_chunk(self) -> bytes:
        """The next chunk; b"" at the end (or past `size`, if the file grew meanwhile)."""
        if self.fd < 0:
            return b""
        chunk = os.read(self.fd, min(CHUNK_BYTES, self.size - self._read))
        self._read += len(chunk)
        return chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.read_chunk():
                yield chunk
        finally:
            self.close()


def open_file(root: Path, path: str) -> OpenFile:
    """Open the regular file at `path` beneath `root` for reading (no link followed)."""
    parts = relative_parts(path)
    if not parts:
        raise NoSuchFile("Give the path of a file in the workspace, not the workspace itself.")
    dir_fd = _open_dir(root, parts[:-1])
    try:
        try:
            # O_NONBLOCK: a FIFO planted in the workspace must not hang the reader.
            fd = os.open(
                parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError as exc:
            raise _refusal(dir_fd, parts[-1], path, exc) from exc
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NoSuchFile(f"{path!r} is not a regular file; only files can be downloaded.")
    return OpenFile(fd, parts[-1], st.st_size)


def save_upload(root: Path, folder: list[str], name: str, source: BinaryIO) -> dict[str, object]:
    """Write `source` to `root/folder/name` (folders made as needed); returns path and size."""
    dir_fd = _open_dir(root, folder, create=True)
    temporary = f".upload-{uuid.uuid4().hex}.part"
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        size = 0
        try:
            while chunk := source.read(CHUNK_BYTES):
                os.write(fd, chunk)
                size += len(chunk)
            owner = _owner(dir_fd)
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        try:
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError as exc:
            raise UnsafePath(
                f"{name!r} is a folder in the workspace; upload under another name."
            ) from exc
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(dir_fd)
    return {"path": "/".join([*folder, name]), "size": size}
