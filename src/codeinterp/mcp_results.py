"""A cell's `Execution` as an MCP tool result: the text a model reads, then each image.

Errors: an exception raised by the user's code is a normal result the model should read; it
comes back as text starting with "Error:" and `isError` false. `isError` is true only when the
cell could not run to its end: it timed out or its interpreter died (the text says so, and the
next call works).
"""

from __future__ import annotations

import base64
from dataclasses import replace

from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent

from codeinterp.outputs import Display, Execution
from codeinterp.render import render_for_model

MAX_TEXT_CHARS = 20_000  # of a cell's rendered output, cut from the middle beyond this
_NO_OUTPUT = render_for_model(Execution())


def execution_result(execution: Execution, timeout_s: float | None) -> CallToolResult:
    """Text (render_for_model, without image placeholders) then each image as ImageContent."""
    images: list[tuple[str, bytes]] = []
    kept = []
    for output in execution.outputs:
        image = _image_of(output) if isinstance(output, Display) else None
        if image is None:
            kept.append(output)
        else:
            images.append(image)
    bare = Execution(outputs=[], execution_count=execution.execution_count)
    sections = [render_for_model(replace(bare, outputs=kept), max_chars=MAX_TEXT_CHARS)]
    if execution.timed_out:
        limit = f" of {timeout_s:g} s" if timeout_s is not None else ""
        sections.append(f"Error: the cell hit its time limit{limit} and was interrupted.")
    elif execution.lost is not None:
        sections.append(f"Error: the interpreter was lost ({execution.lost}).")
    elif execution.error is not None:
        sections.append("Error:")
    if execution.lost is not None:
        sections.append(
            "Variables and imports are gone; files in the workspace were kept. "
            "The next call runs in a fresh interpreter."
        )
    if execution.error is not None:
        sections.append(render_for_model(replace(bare, error=execution.error)))
    text = "\n".join(s for s in sections if s != _NO_OUTPUT)
    content: list[ContentBlock] = []
    if text or not images:
        content.append(TextContent(type="text", text=text or _NO_OUTPUT))
    content += [
        ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime)
        for mime, data in images
    ]
    return CallToolResult(content=content, is_error=execution.timed_out or bool(execution.lost))


def _image_of(display: Display) -> tuple[str, bytes] | None:
    for mime in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        data = display.data.get(mime)
        if isinstance(data, bytes):
            return mime, data
    return None
