"""The `subprocess` executor: every cell is a `.py` file run by a fresh interpreter.

Stateless by design (the seed's third method): nothing but workspace files survives from one
cell to the next. Each cell is written to `<workspace>/.codeinterp/cell-NNNN.py`, so tracebacks
point at a real file and the code that ran stays inspectable. Output, plots and the trailing
expression's value are captured as in the other executors.
"""

from __future__ import annotations

from typing import Any

from codeinterp.errors import SessionClosed
from codeinterp.executors.base import Capabilities, SessionState, Workspace
from codeinterp.executors.repl import ReplExecutor, ReplSession, WorkerSettings

CELLS_DIR = ".codeinterp"


class SubprocessSession(ReplSession):
    """A session whose interpreter lives for one cell only."""

    keeps_worker = False

    def __init__(self, settings: WorkerSettings, workspace: Workspace) -> None:
        self._cell_number = 0
        super().__init__(settings, workspace)

    def _request(self, code: str) -> dict[str, Any]:
        self._cell_number += 1
        cells = self.workspace / CELLS_DIR
        cells.mkdir(exist_ok=True)
        path = cells / f"cell-{self._cell_number:04d}.py"
        path.write_text(code, encoding="utf-8")
        return {"op": "execute", "path": str(path)}

    def restart(self) -> None:
        """Nothing to clear: every cell already starts from scratch."""
        if self.state is SessionState.CLOSED:
            raise SessionClosed(action="restart")


class SubprocessExecutor(ReplExecutor):
    name = "subprocess"
    capabilities = Capabilities(stateful=False, can_kill=True, separate_process=True)
    session_class = SubprocessSession
