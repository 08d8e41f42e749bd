"""A matplotlib backend for sessions: draws with Agg, and `plt.show()` sends figures as PNG.

Selected with MPLBACKEND=module://codeinterp.worker.mplbackend. The runner of the current cell
is told; outside a cell `show()` does nothing.
"""

from __future__ import annotations

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from codeinterp.worker.runner import show_figures

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase

BACKEND = "module://codeinterp.worker.mplbackend"


def show(*args: object, **kwargs: object) -> None:
    show_figures()
