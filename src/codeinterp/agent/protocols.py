"""How code is found in a model's reply and how results go back: `markdown` and `tools`.

markdown: the model writes prose and at most one fenced ```python block per reply. We watch the
stream and stop it the moment the block's closing fence arrives, so the model never writes
(invents) its own results; the results go back as the next user message.

tools: a `python` function tool; the model calls it natively, results go back as tool
messages. Better for large models that were trained for it; small local models do worse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from codeinterp.models.base import Message, ToolCall, ToolSpec

FENCE_OPEN = re.compile(r"^[ \t]*```[ \t]*(python|py|python3|ipython)?[ \t]*$", re.IGNORECASE)
FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")

PYTHON_TOOL = ToolSpec(
    name="python",
    description=(
        "Run Python code in a stateful Jupyter-like session: variables, imports and files "
        "persist between calls. The value of the last expression is shown. Returns the output."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
    },
)

# A reply is prose, optionally followed by one well-formed python block (llama.cpp GBNF). Prose
# and code may hold single or double backticks, never three in a row. Whatever follows the
# closing fence is free: the loop stops reading there, and forbidding it made a small model
# mangle its fence rather than end the reply.
MARKDOWN_GRAMMAR = r"""
root  ::= prose ( "```python\n" code "\n```" rest )?
prose ::= ( [^`] | "`" [^`] | "``" [^`] )*
code  ::= ( [^`] | "`" [^`] | "``" [^`] )+
rest  ::= [^\x00]*
"""
# The first reply of a turn starts with its code block: a small model may not answer from its
# head (it does, confidently and wrongly, when allowed), and writes far fewer tokens.
CODE_OPENING = "```python\n"  # how a reply that must open with code begins
CODE_FIRST_GRAMMAR = r"""
root  ::= "```python\n" code "\n```" rest
code  ::= ( [^`] | "`" [^`] | "``" [^`] )+
rest  ::= [^\x00]*
"""


@dataclass
class CodeWatcher:
    """Follows a streamed reply; finds the first fenced python block and where it closes."""

    text: str = ""
    code: str | None = None  # set once the block is closed
    _code_start: int | None = None
    _scanned: int = 0  # index of the first line not yet looked at

    def feed(self, chunk: str) -> bool:
        """Add streamed text; True once a complete code block has arrived (stop the stream)."""
        self.text += chunk
        while (end := self.text.find("\n", self._scanned)) >= 0:
            line = self.text[self._scanned : end]
            if self._code_start is None:
                if FENCE_OPEN.match(line):
                    self._code_start = end + 1
            elif FENCE_CLOSE.match(line):
                self.code = self.text[self._code_start : self._scanned].rstrip("\n")
                self.text = self.text[:end]  # drop anything after the closing fence
                return True
            self._scanned = end + 1
        return False

    def finish(self) -> None:
        """The stream ended: a block left open (no closing fence) still counts as code."""
        if self.code is None and self._code_start is not None:
            tail = self.text[self._code_start :]
            if FENCE_CLOSE.match(tail.splitlines()[-1] if tail.strip() else ""):
                tail = tail.rsplit("```", 1)[0]
            self.code = tail.rstrip("\n")
            if not self.text.rstrip().endswith("```"):
                self.text = self.text.rstrip("\n") + "\n```"

    @property
    def prose(self) -> str:
        """The reply without its code block."""
        if self._code_start is None:
            return self.text.strip()
        return self.text[: self.text.rfind("```", 0, self._code_start)].strip()


def results_message(rendered: str, images: tuple[bytes, ...] = (), note: str = "") -> Message:
    """Execution results as the next user turn, in a form every chat template accepts; plots
    ride along as image attachments for models that can see them; a note follows the output."""
    content = f"Execution result:\n```text\n{rendered}\n```"
    if note:
        content += f"\n{note}"
    return Message(role="user", content=content, images=images)


def tool_code(call: ToolCall) -> str | None:
    """The code argument of a `python` tool call (tolerating a bare string), or None."""
    if call.name != PYTHON_TOOL.name:
        return None
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return call.arguments  # some models send the code itself
    if isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        return str(arguments["code"])
    return None
