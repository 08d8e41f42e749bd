"""The terminal surface: renders the loop's events for a person, in the seed's colours.

User text in blue, the model's prose as markdown (green), its code highlighted (yellow frame),
results in grey; images are saved into the workspace and their paths shown.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from codeinterp.agent.events import (
    CodeBlock,
    Event,
    ExecutionDone,
    Finished,
    OutputEvent,
    RoundDone,
    TextDelta,
)
from codeinterp.outputs import Display, Stream
from codeinterp.render import clean_text, image_placeholder

STOP_NOTES = {
    "max_rounds": "[stopped: the round limit was reached; ask again to continue]",
    "interrupted": "[interrupted]",
    "model_error": "[the model failed: {answer}]",
}


class EventPrinter:
    """Consumes events one by one and draws them."""

    def __init__(self, console: Console, workspace: Path, *, images_dir: str = "plots") -> None:
        self.console = console
        self.workspace = workspace
        self.images_dir = images_dir
        self._text = ""
        self._live: Live | None = None
        self._figures = 0

    def user(self, text: str) -> None:
        self.console.print(Text(f"you> {text}", style="bold blue"))

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._text += event.text
            if self._live is None:
                self._live = Live(console=self.console, refresh_per_second=12, transient=False)
                self._live.start()
            self._live.update(Markdown(_without_open_fence(self._text), code_theme="monokai"))
        elif isinstance(event, CodeBlock):
            self._end_text()
        elif isinstance(event, OutputEvent):
            self._output(event)
        elif isinstance(event, ExecutionDone):
            self._execution_done(event)
        elif isinstance(event, RoundDone):
            self._end_text()
        elif isinstance(event, Finished):
            self._end_text()
            note = STOP_NOTES.get(event.stop_reason)
            if note:
                self.console.print(Text(note.format(answer=event.answer), style="yellow"))

    def _end_text(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:  # rich ends a piped Live's text without a newline
                self.console.line()
        self._text = ""

    def _output(self, event: OutputEvent) -> None:
        output = event.output
        if isinstance(output, Stream):
            style = "grey50" if output.name == "stdout" else "red"
            self.console.print(Text(clean_text(output.text).rstrip("\n"), style=style))
        elif isinstance(output, Display):
            self.console.print(Text(self._display(output), style="grey50"))

    def _display(self, display: Display) -> str:
        for mime, data in display.data.items():
            if mime.startswith("image/") and isinstance(data, bytes):
                self._figures += 1
                folder = self.workspace / self.images_dir
                extension = mime.split("/")[1].split("+")[0].replace("jpeg", "jpg")
                path = folder / f"figure-{self._figures}.{extension}"
                try:
                    folder.mkdir(exist_ok=True)
                    path.write_bytes(data)
                    return f"{image_placeholder(mime, data, self._figures)[:-1]} → {path}]"
                except OSError as exc:
                    return f"{image_placeholder(mime, data, self._figures)} (not saved: {exc})"
        return clean_text(display.text or "[rich output]")

    def _execution_done(self, event: ExecutionDone) -> None:
        execution = event.execution
        if execution.error is not None:
            text = clean_text("\n".join(execution.error.traceback))
            self.console.print(Text(text or execution.error.ename, style="red"))
        if execution.timed_out:
            self.console.print(Text("[the cell hit its time limit]", style="yellow"))
        if execution.lost:
            self.console.print(
                Text(f"[the interpreter was lost ({execution.lost}); state reset]", style="yellow")
            )


def _without_open_fence(text: str) -> str:
    """While a code block is still streaming, close it so markdown renders it as code."""
    return text + "\n```" if text.count("```") % 2 else text


def code_panel(code: str) -> Panel:
    return Panel(Syntax(code, "python", theme="monokai"), border_style="yellow")
