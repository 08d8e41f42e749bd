"""Golden-string tests for `codeinterp.render`: what a model reads after a cell ran."""

from __future__ import annotations

import re
import struct
import zlib

from codeinterp.outputs import Display, Error, Execution, Stream
from codeinterp.render import clean_text, image_placeholder, render_for_model, strip_ansi


def tiny_png(width: int, height: int) -> bytes:
    """A real, valid greyscale PNG of the given size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def render(*outputs: Stream | Display, timed_out: bool = False, lost: str | None = None) -> str:
    return render_for_model(Execution(outputs=list(outputs), timed_out=timed_out, lost=lost))


def test_stdout_is_rendered_as_is() -> None:
    assert render(Stream("stdout", "hello\nworld\n")) == "hello\nworld"


def test_empty_cell_renders_no_output_marker() -> None:
    assert render() == "[no output]"


def test_only_empty_streams_render_no_output_marker() -> None:
    assert render(Stream("stdout", "")) == "[no output]"


def test_stderr_is_labelled_when_mixed_with_stdout() -> None:
    text = render(Stream("stdout", "a\n"), Stream("stderr", "warn\n"), Stream("stdout", "b\n"))
    assert text == "a\n[stderr]\nwarn\n[stdout]\nb"


def test_stderr_alone_is_not_labelled() -> None:
    assert render(Stream("stderr", "warning: x\n")) == "warning: x"


def test_consecutive_chunks_of_a_stream_are_joined() -> None:
    assert render(Stream("stdout", "ab"), Stream("stdout", "c\n")) == "abc"


def test_ansi_colour_codes_are_stripped() -> None:
    assert strip_ansi("\x1b[31mred\x1b[0m \x1b[1;32mgreen\x1b[m") == "red green"


def test_osc_title_and_hyperlink_sequences_are_stripped() -> None:
    text = "\x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"
    assert strip_ansi(text) == "link"


def test_cursor_movement_sequences_are_stripped() -> None:
    assert strip_ansi("a\x1b[2K\x1b[1Gb\x1b(Bc") == "abc"


def test_progress_bar_keeps_only_text_after_last_carriage_return() -> None:
    assert clean_text("10%\r50%\r100%\ndone\n") == "100%\ndone\n"


def test_progress_bar_across_chunks_collapses() -> None:
    chunks = [Stream("stdout", "1/3\r"), Stream("stdout", "2/3\r"), Stream("stdout", "3/3\n")]
    assert render(*chunks) == "3/3"


def test_crlf_is_kept_as_newline() -> None:
    assert clean_text("a\r\nb\r\n") == "a\nb\n"


def test_trailing_carriage_return_keeps_the_line() -> None:
    assert clean_text("100%\r\n") == "100%\n"


def test_control_characters_are_escaped_visibly() -> None:
    assert clean_text("ding\x07\x00\tok\x7f") == "ding\\x07\\x00\tok\\x7f"


def test_lone_escape_byte_is_escaped() -> None:
    assert clean_text("a\x1b") == "a\\x1b"


def test_surrogate_escaped_bytes_do_not_crash_and_are_escaped() -> None:
    raw = b"ok \xff\xfe".decode("utf-8", errors="surrogateescape")
    text = render(Stream("stdout", raw))
    assert text == "ok \\udcff\\udcfe"
    text.encode("utf-8")  # safe to send anywhere


def test_trailing_expression_value_is_shown_after_streams() -> None:
    text = render(Display({"text/plain": "42"}, is_result=True), Stream("stdout", "hi\n"))
    assert text == "hi\n42"


def test_png_becomes_placeholder_with_size() -> None:
    assert render(Display({"image/png": tiny_png(64, 48)})) == "[image/png 64x48: figure-1.png]"


def test_figure_text_plain_is_replaced_by_placeholder() -> None:
    fig = Display({"image/png": tiny_png(3, 2), "text/plain": "<Figure size 640x480 with 1 Axes>"})
    assert render(fig) == "[image/png 3x2: figure-1.png]"


def test_figures_are_numbered_in_order() -> None:
    text = render(
        Display({"image/png": tiny_png(1, 1)}),
        Display({"text/plain": "x"}),
        Display({"image/png": tiny_png(2, 2)}),
    )
    assert text == "[image/png 1x1: figure-1.png]\nx\n[image/png 2x2: figure-2.png]"


def test_gif_placeholder_reads_size() -> None:
    gif = b"GIF89a" + struct.pack("<HH", 10, 20) + b"\x00" * 10
    assert image_placeholder("image/gif", gif, 3) == "[image/gif 10x20: figure-3.gif]"


def test_jpeg_placeholder_reads_size_from_sof() -> None:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof0 = b"\xff\xc0" + struct.pack(">HBHH", 11, 8, 120, 160) + b"\x01\x01\x11\x00"
    jpeg = b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"
    assert image_placeholder("image/jpeg", jpeg, 1) == "[image/jpeg 160x120: figure-1.jpg]"


def test_unreadable_image_placeholder_omits_size() -> None:
    assert image_placeholder("image/png", b"garbage", 2) == "[image/png: figure-2.png]"


def test_svg_placeholder_has_svg_extension() -> None:
    svg = Display({"image/svg+xml": "<svg/>", "text/plain": "<Figure>"})
    assert render(svg) == "[image/svg+xml: figure-1.svg]"


def test_html_without_text_plain_falls_back_to_stripped_text() -> None:
    table = (
        "<style>td{}</style><table><tr><th>a</th><th>b</th></tr>"
        "<tr><td>1</td><td>&lt;2</td></tr></table>"
    )
    assert render(Display({"text/html": table})) == "a b\n1 <2"


def test_text_plain_is_preferred_over_html() -> None:
    assert render(Display({"text/html": "<b>x</b>", "text/plain": "plain"})) == "plain"


def test_display_without_text_names_its_mime_types() -> None:
    assert render(Display({"application/vnd.custom+json": "{}"})) == (
        "[application/vnd.custom+json output]"
    )


def test_error_renders_traceback_ending_with_name_and_value() -> None:
    err = Error(
        "ZeroDivisionError",
        "division by zero",
        [
            "Traceback (most recent call last):\n",
            '  File "<cell 1>", line 1, in <module>\n',
            "ZeroDivisionError: division by zero\n",
        ],
    )
    text = render_for_model(Execution(outputs=[Stream("stdout", "before\n")], error=err))
    assert text == (
        "before\n"
        "Traceback (most recent call last):\n"
        '  File "<cell 1>", line 1, in <module>\n'
        "ZeroDivisionError: division by zero"
    )


def test_error_summary_is_appended_when_traceback_lacks_it() -> None:
    err = Error("ValueError", "bad", ["\x1b[0;31m---> 1\x1b[0m raise ValueError('bad')"])
    assert (
        render_for_model(Execution(error=err)) == "---> 1 raise ValueError('bad')\nValueError: bad"
    )


def test_error_without_traceback_is_just_its_summary() -> None:
    assert render_for_model(Execution(error=Error("KeyboardInterrupt", ""))) == "KeyboardInterrupt"


def test_timeout_adds_a_note() -> None:
    text = render(Stream("stdout", "working\n"), timed_out=True)
    assert text == "working\n[the cell hit its time limit and was interrupted]"


def test_lost_interpreter_adds_a_note_with_cause() -> None:
    assert render(lost="signal 11 (SIGSEGV)") == (
        "[the interpreter was lost (signal 11 (SIGSEGV)): all variables and imports are gone;"
        " files in the workspace were kept]"
    )


def test_long_output_keeps_head_and_tail_with_marker() -> None:
    text = "".join(f"line {i:04d}\n" for i in range(1000))
    out = render_for_model(Execution(outputs=[Stream("stdout", text)]), max_chars=1000)
    head, marker, tail = re.split(r"\n(…\[\d+ characters cut\]…)\n", out)
    assert len(out) <= 1000
    assert head.startswith("line 0000\nline 0001\n")
    assert tail.endswith("line 0998\nline 0999")
    assert re.fullmatch(r"(line \d{4}\n)*line \d{4}", head)  # cut on line boundaries
    assert re.fullmatch(r"(line \d{4}\n)*line \d{4}", tail)
    assert 0.5 < len(head) / (len(head) + len(tail)) < 0.7  # about 60 / 40
    kept = head + "\n" + tail
    assert int(re.findall(r"\d+", marker)[0]) == len(text.rstrip("\n")) - len(kept) + 1


def test_long_single_line_is_cut_mid_line() -> None:
    out = render_for_model(
        Execution(outputs=[Stream("stdout", "x" * 500 + "y" * 500)]), max_chars=100
    )
    assert re.fullmatch(r"x+\n…\[\d+ characters cut\]…\ny+", out)
    assert len(out) <= 100
    head, tail = out.split("\n")[0], out.split("\n")[2]
    assert int(out.split("[")[1].split()[0]) == 1000 - len(head) - len(tail)


def test_short_output_is_not_cut() -> None:
    assert render_for_model(Execution(outputs=[Stream("stdout", "abc")]), max_chars=3) == "abc"


def test_error_survives_truncation_in_the_tail() -> None:
    err = Error("RuntimeError", "boom", [])
    out = render_for_model(
        Execution(outputs=[Stream("stdout", "spam\n" * 2000)], error=err), max_chars=500
    )
    assert out.endswith("RuntimeError: boom")
    assert "characters cut]…" in out
