"""Jupyter-like cell semantics, in whatever process runs the user's code.

`CellRunner.run(code)` executes one cell in a persistent namespace and reports, through an
`emit` callback, what a Jupyter kernel would show: the trailing expression's value as a rich
MIME bundle, `display()` calls, matplotlib figures (on `plt.show()` and at the end of the cell),
and an exception as a clean `Error` (no frames of ours in the traceback). Standard streams are
not this module's job: the caller redirects them (see streams.py).

Stdlib only, plus codeinterp.outputs: it runs inside workers, sandboxes and the in-process
executor alike.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import inspect
import io
import json
import linecache
import os
import pprint
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from codeinterp.outputs import BINARY_MIME_TYPES, Display, Error, Output

Emit = Callable[[Output], None]

# Rich representation methods, in the order Jupyter's formatters consult them.
REPR_METHODS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
)


def _valid_payload(mime: str, value: object) -> str | bytes | None:
    """Accept only well-typed payloads: objects that answer every attribute lie (mocks)."""
    if mime in BINARY_MIME_TYPES:
        return value if isinstance(value, bytes) else None
    if mime == "application/json" and isinstance(value, dict | list):
        return json.dumps(value)
    return value if isinstance(value, str) else None


def plain_text(obj: object) -> str:
    if type(obj) in (dict, list, tuple, set, frozenset):
        return pprint.pformat(obj, width=100, sort_dicts=False)
    return repr(obj)


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _is_figure(obj: object) -> bool:
    return type(obj).__module__.startswith("matplotlib.figure") and hasattr(obj, "savefig")


def mime_bundle(obj: object) -> tuple[dict[str, str | bytes], dict[str, Any]]:
    """The MIME bundle Jupyter would show for `obj`; text/plain is always present."""
    data: dict[str, str | bytes] = {}
    metadata: dict[str, Any] = {}
    if not inspect.isclass(obj):
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method):
            try:
                bundle = method(include=None, exclude=None)
                if isinstance(bundle, tuple) and len(bundle) == 2:
                    bundle, metadata = bundle[0], dict(bundle[1] or {})
                if isinstance(bundle, dict):
                    for mime, value in bundle.items():
                        payload = _valid_payload(str(mime), value)
                        if payload is not None:
                            data[str(mime)] = payload
            except Exception:  # a broken repr must not fail the cell; fall back to repr()
                pass
        for mime, attr in REPR_METHODS:
            method = getattr(obj, attr, None)
            if mime in data or not callable(method):
                continue
            try:
                value = method()
            except Exception:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                value, extra = value
                if isinstance(extra, dict):
                    metadata[mime] = extra
            payload = _valid_payload(mime, value)
            if payload is not None:
                data[mime] = payload
        if _is_figure(obj) and "image/png" not in data:
            data["image/png"] = figure_png(obj)
    if "text/plain" not in data:
        try:
            data["text/plain"] = plain_text(obj)
        except Exception as exc:
            data["text/plain"] = f"<{type(obj).__name__} object: repr() failed: {exc!r}>"
    return data, metadata


def flush_figures(emit: Emit) -> None:
    """Send every open matplotlib figure as a PNG and close it (Jupyter's inline behaviour)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in plt.get_fignums():
        fig = plt.figure(num)
        emit(Display({"image/png": figure_png(fig), "text/plain": repr(fig)}))
    plt.close("all")


def _suppressed(code: str) -> bool:
    """A trailing `;` hides the value, as in IPython (`plt.plot(x);`)."""
    lines = [
        ln for ln in code.rstrip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    return bool(lines) and lines[-1].rstrip().endswith(";")


class CellRunner:
    """Runs cells in one persistent namespace, reporting outputs through `emit`."""

    def __init__(self, emit: Emit, namespace: dict[str, Any] | None = None) -> None:
        self.emit = emit
        # A real module, so pickle and multiprocessing can find functions defined in cells.
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = builtins
        self.namespace = self.module.__dict__ if namespace is None else namespace
        self.namespace.setdefault("display", self.display)
        self.execution_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def display(self, *objs: object, raw: bool = False, **_: object) -> None:
        """`display(obj, ...)`: show rich outputs now (a raw=True argument is a MIME bundle)."""
        for obj in objs:
            if raw and isinstance(obj, dict):
                data = {k: v for k in obj if (v := _valid_payload(k, obj[k])) is not None}
                self.emit(Display(data))
            else:
                data, metadata = mime_bundle(obj)
                self.emit(Display(data, metadata))

    def run(self, code: str, filename: str | None = None) -> Error | None:
        """Execute one cell; return the error it raised (as data), or None."""
        self.execution_count += 1
        filename = filename or f"<cell-{self.execution_count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        global _active
        _active = self
        try:
            self._execute(code, filename)
            return None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
            return error_from_exception(exc, filename)
        finally:
            _active = None
            with contextlib.suppress(Exception):
                flush_figures(self.emit)

    def show_figures(self) -> None:
        flush_figures(self.emit)

    def _execute(self, code: str, filename: str) -> None:
        tree = ast.parse(code, filename, "exec")
        last: ast.Expression | None = None
        tail = tree.body[-1] if tree.body else None
        if isinstance(tail, ast.Expr):
            tree.body.pop()
            last = ast.Expression(tail.value)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._await(eval(compile(tree, filename, "exec", flags=flags), self.namespace))
        if last is None:
            return
        value = self._await(eval(compile(last, filename, "eval", flags=flags), self.namespace))
        if value is not None and not _suppressed(code):
            self.namespace["_"] = value
            data, metadata = mime_bundle(value)
            self.emit(Display(data, metadata, is_result=True))

    def _await(self, value: Any) -> Any:
        """Top-level `await` compiles to a coroutine: run it on the session's event loop."""
        if not inspect.iscoroutine(value):
            return value
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(value)


_active: CellRunner | None = None
_OUR_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def show_figures() -> None:
    """`plt.show()` in a session: send open figures to the cell that is running now."""
    if _active is not None:
        _active.show_figures()


def error_from_exception(exc: BaseException, filename: str) -> Error:
    """An `Error` whose traceback starts at the user's cell, not inside the runner."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    report = traceback.TracebackException(type(exc), exc, tb)
    # Frames of our own machinery (e.g. the SIGINT handler that raised KeyboardInterrupt)
    # are noise to the reader.
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not frame.filename.startswith(_OUR_DIR)]
    )
    lines = list(report.format())
    return Error(
        ename=type(exc).__name__,
        evalue=str(exc),
        traceback=[line.rstrip("\n") for chunk in lines for line in chunk.splitlines()],
    )
