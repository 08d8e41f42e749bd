"""A session's workspace files: list, upload (multipart, size-limited), download.

The multipart body is parsed from a stream that counts bytes, so an upload over the limit is
refused with 413 as soon as it crosses it, not after it has been spooled to disk whole.
Sessions whose workspace is on another host (`gateway`) have no files here: 409, before
anything is read or written (`Runtime.local_workspace`). Every file request is a use of its
session: the session is not released as idle during it, and its idle time starts after.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from codeinterp.server import files
from codeinterp.server.deps import RuntimeDep
from codeinterp.server.runtime import Runtime
from codeinterp.server.schemas import FileInfo, Uploaded

router = APIRouter(prefix="/sessions/{session_id}/files", tags=["files"])
# Bytes of multipart framing (boundaries, part headers, the `dir` field) allowed on top of the
# limit when counting the raw body; the files themselves are held to the limit exactly.
MULTIPART_SLACK = 64 * 1024

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more files",
                        },
                        "dir": {"type": "string", "description": "a folder in the workspace"},
                    },
                }
            }
        },
    }
}


@router.get("", response_model=list[FileInfo])
async def list_files(session_id: str, rt: RuntimeDep) -> list[dict[str, object]]:
    with rt.sessions.in_use(session_id) as entry:
        workspace = await rt.run(rt.local_workspace, entry)
        return await rt.run(files.list_files, workspace)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=list[Uploaded],
    openapi_extra=UPLOAD_BODY,
)
async def upload(session_id: str, request: Request, rt: RuntimeDep) -> list[dict[str, object]]:
    with rt.sessions.in_use(session_id) as entry:
        workspace = await rt.run(rt.local_workspace, entry)
        return await _upload(request, rt, workspace)


async def _upload(request: Request, rt: Runtime, workspace: Path) -> list[dict[str, object]]:
    limit = rt.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise files.UploadTooLarge(limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise files.UnsafePath(
            "Send the files as multipart/form-data, each in a field named `file` "
            "(curl: -F file=@data.csv)."
        )
    parser = MultiPartParser(request.headers, _limited(request.stream(), limit))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise files.UnsafePath(f"Cannot read the multipart body: {exc.message}") from exc
    try:
        uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
        if not uploads:
            raise files.UnsafePath(
                "No file in the upload: send each file in a multipart field named `file`."
            )
        if sum(u.size or 0 for u in uploads) > limit:
            raise files.UploadTooLarge(limit)
        folder_field = form.get("dir")
        folder_text = folder_field if isinstance(folder_field, str) else ""
        folder = files.relative_parts(folder_text, new=True)
        return await rt.run(_save_all, workspace, folder, uploads)
    finally:
        await form.close()


def _save_all(
    workspace: Path, folder: list[str], uploads: list[UploadFile]
) -> list[dict[str, object]]:
    return [
        files.save_upload(workspace, folder, files.upload_name(u.filename or ""), u.file)
        for u in uploads
    ]


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit + MULTIPART_SLACK:
            raise files.UploadTooLarge(limit)
        yield chunk


@router.get(
    "/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(session_id: str, path: str, rt: RuntimeDep) -> StreamingResponse:
    with rt.sessions.in_use(session_id) as entry:
        workspace = await rt.run(rt.local_workspace, entry)
        opened = await rt.run(files.open_file, workspace, path)
    media_type = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
    return StreamingResponse(
        _read(rt, opened),
        media_type=media_type,
        headers={
            "Content-Length": str(opened.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(opened.name)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _read(rt: Runtime, opened: files.OpenFile) -> AsyncIterator[bytes]:
    try:
        while chunk := await rt.run(opened.read_chunk):
            yield chunk
    finally:
        opened.close()
