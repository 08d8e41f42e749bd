"""Output written below Python (fd 1/2) reaches the right cell, and nothing of ours leaks in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.outputs import Output, Stream
from codeinterp.worker.streams import EmitStream, FdCapture, OutputMux


class Captured:
    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.mux = OutputMux(self.sent.append)
        self.fd = os.open(os.devnull, os.O_WRONLY)  # a spare descriptor FdCapture takes over
        self.capture = FdCapture(self.fd, EmitStream("stdout", self.mux))

    def text(self) -> str:
        """What reached the stream so far, as the worker sends it at the end of a cell."""
        self.mux.flush()
        return "".join(o.text for o in self.sent if isinstance(o, Stream))


@pytest.fixture
def captured() -> Iterator[Captured]:
    captured = Captured()
    yield captured
    os.close(captured.fd)


def test_drains_that_gave_up_leave_no_marker_in_the_output(captured: Captured) -> None:
    """On a loaded machine a drain may stop waiting before the reader thread runs."""
    fd, capture = captured.fd, captured.capture
    for i in range(200):
        os.write(fd, b"line %d\n" % i)
        capture.drain(timeout_s=0)  # gives up at once, as when the reader is starved
    assert capture.drain(timeout_s=10)
    assert captured.text() == "".join(f"line {i}\n" for i in range(200))


def test_a_drain_returns_with_everything_written_before_it(captured: Captured) -> None:
    fd, capture = captured.fd, captured.capture
    os.write(fd, b"x" * 200_000)  # more than one read of the pipe
    capture.drain(timeout_s=10)
    assert captured.text() == "x" * 200_000


def test_nul_bytes_and_marker_lookalikes_in_output_survive(captured: Captured) -> None:
    fd, capture = captured.fd, captured.capture
    data = b"a\0b\0codeinterp-drain-\0codeinterp-drain-1-2\0end\0"
    for byte in data:  # one byte at a time: every partial state of the reader is met
        os.write(fd, bytes([byte]))
    capture.drain(timeout_s=10)
    assert captured.text() == data.decode()


def test_a_drain_still_works_when_user_code_re_points_the_descriptor(
    captured: Captured, tmp_path: Path
) -> None:
    os.write(captured.fd, b"before\n")
    target = tmp_path / "log.txt"
    with target.open("wb") as log:
        os.dup2(log.fileno(), captured.fd)  # as `os.dup2(f.fileno(), 1)` in a cell would
    assert captured.capture.drain(timeout_s=10)  # its marker did not go astray into the file
    assert captured.text() == "before\n"
    assert target.read_bytes() == b""
