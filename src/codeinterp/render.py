"""Renders an `Execution` as plain text for a language model.

A model reads terminal-ish output best when it is clean: no colour codes, progress bars
collapsed to their final state, control bytes made visible, images reduced to a short
placeholder, and long output cut from the middle so the start and the end (where errors land)
both survive. The terminal and web front ends reuse the helpers for the same reasons.
"""

from __future__ import annotations

import html
import re
import struct

from codeinterp.outputs import Display, Execution, Stream, StreamName

# CSI (ESC [ ... final, or 8-bit \x9b), OSC (ESC ] ... BEL/ST), DCS/SOS/PM/APC strings, and
# the short two-byte escapes (ESC followed by intermediates and one final byte).
_ANSI_RE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
)
# Control characters other than \n and \t, C1 controls, and lone surrogates (which is how
# undecodable bytes read with errors="surrogateescape" arrive).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_IMAGE_PREFERENCE = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
_TEXT_FALLBACKS = ("text/markdown", "application/json", "text/latex")
_NO_OUTPUT = "[no output]"


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colours, cursor moves, window titles, hyperlinks)."""
    return _ANSI_RE.sub("", text)


def _collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: on each line only the text after the last `\\r`."""
    lines = []
    for line in text.split("\n"):
        line = line.rstrip("\r")  # "\r\n" and a bar's trailing "\r" end the line as it is
        lines.append(line.rsplit("\r", 1)[-1])
    return "\n".join(lines)


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """Strip ANSI codes, collapse progress-bar `\\r`s, and escape remaining control characters
    (and lone surrogates) visibly, e.g. a bell becomes the four characters `\\x07`."""
    return _CONTROL_RE.sub(_escape_control, _collapse_carriage_returns(strip_ansi(text)))


def _image_size(mime: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from the file header, or None when unknown or malformed."""
    try:
        if mime == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if mime == "image/gif" and data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if mime == "image/jpeg" and data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 <= len(data) and data[i] == 0xFF:
                marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return int(w), int(h)
                i += 2 + length
    except struct.error:
        return None
    return None


def image_placeholder(mime: str, data: bytes | str, index: int) -> str:
    """A short stand-in for an image, e.g. `[image/png 640x480: figure-1.png]`.

    `index` numbers the figures of one execution from 1; the size is omitted when the header
    cannot be read (SVG, WebP, truncated data).
    """
    subtype = mime.split("/", 1)[-1].split("+", 1)[0].split(";", 1)[0].strip() or "bin"
    ext = {"jpeg": "jpg"}.get(subtype, subtype)
    size = _image_size(mime, data) if isinstance(data, bytes) else None
    dims = f" {size[0]}x{size[1]}" if size else ""
    return f"[{mime}{dims}: figure-{index}.{ext}]"


def _html_to_text(markup: str) -> str:
    """A rough text version of an HTML fragment: tags dropped, blocks on their own lines."""
    markup = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h[1-6]|table|thead|tbody|pre)\s*>", "\n", markup)
    markup = re.sub(r"(?i)</t[dh]\s*>", " ", markup)
    text = html.unescape(re.sub(r"<[^>]*>", "", markup))
    lines = (re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _display_text(display: Display, figures: list[int]) -> str:
    """The text shown for one rich output; `figures` counts images across the execution."""
    data = display.data
    mimes = [m for m in _IMAGE_PREFERENCE if m in data]
    mimes += [m for m in data if m.startswith("image/") and m not in mimes]
    if mimes:
        figures[0] += 1
        return image_placeholder(mimes[0], data[mimes[0]], figures[0])
    if isinstance(data.get("text/plain"), str):
        return clean_text(display.text)
    if isinstance(data.get("text/html"), str):
        return clean_text(_html_to_text(str(data["text/html"])))
    for mime in _TEXT_FALLBACKS:
        if isinstance(data.get(mime), str):
            return clean_text(str(data[mime]))
    return f"[{', '.join(data)} output]" if data else ""


def _stream_sections(execution: Execution) -> list[str]:
    """Consecutive chunks of one stream joined (so `\\r` progress bars collapse across chunks);
    when both streams occur, stderr runs (and stdout runs after them) are labelled."""
    runs: list[tuple[StreamName, str]] = []
    for out in execution.outputs:
        if isinstance(out, Stream) and out.text:
            if runs and runs[-1][0] == out.name:
                runs[-1] = (out.name, runs[-1][1] + out.text)
            else:
                runs.append((out.name, out.text))
    mixed = len({name for name, _ in runs}) > 1
    return [
        (f"[{name}]\n" if mixed and (name == "stderr" or i > 0) else "") + clean_text(text)
        for i, (name, text) in enumerate(runs)
    ]


def _error_text(execution: Execution) -> str:
    """The traceback, ending with `ename: evalue` even if the traceback lacks that line."""
    err = execution.error
    if err is None:
        return ""
    summary = f"{err.ename}: {err.evalue}" if err.evalue else err.ename
    body = clean_text("\n".join(line.rstrip("\n") for line in err.traceback)).rstrip()
    summary = clean_text(summary).rstrip()
    return body if body.endswith(summary) else f"{body}\n{summary}".lstrip("\n")


def _cut_middle(text: str, max_chars: int) -> str:
    """Keep ~60% of the budget from the head and ~40% from the tail, with a marker between."""
    if len(text) <= max_chars:
        return text
    budget = max(0, max_chars - len(f"\n…[{len(text)} characters cut]…\n"))
    head_len, tail_len = budget * 3 // 5, budget - budget * 3 // 5
    head, tail = text[:head_len], text[len(text) - tail_len :] if tail_len else ""
    # Snap to line boundaries when one is near (within a fifth of each part).
    nl = head.rfind("\n")
    if text[head_len : head_len + 1] != "\n" and nl >= head_len * 4 // 5:
        head = head[:nl]
    nl = tail.find("\n")
    if text[-tail_len - 1 : -tail_len] != "\n" and 0 <= nl <= tail_len // 5:
        tail = tail[nl + 1 :]
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n…[{cut} characters cut]…\n{tail}"


def render_for_model(execution: Execution, *, max_chars: int = 4000) -> str:
    """The text a model reads after running a cell: streams, rich outputs, the error, then notes
    about timeouts and lost interpreters; at most about `max_chars` characters."""
    figures = [0]
    sections = _stream_sections(execution)
    sections += [_display_text(o, figures) for o in execution.outputs if isinstance(o, Display)]
    sections.append(_error_text(execution))
    if execution.timed_out:
        sections.append("[the cell hit its time limit and was interrupted]")
    if execution.lost:
        sections.append(
            f"[the interpreter was lost ({clean_text(execution.lost)}): all variables and imports"
            " are gone; files in the workspace were kept]"
        )
    text = "\n".join(s.rstrip("\n") for s in sections if s.strip())
    return _cut_middle(text, max_chars) if text else _NO_OUTPUT
