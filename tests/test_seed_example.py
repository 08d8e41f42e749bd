"""Acceptance: the seed document's data-analysis program runs as one cell and comes back whole.

The program (../shared/seed/data_analysis_example.py) builds a DataFrame, prints df.info() and
draws a histogram, a boxplot and a seaborn pairplot, each followed by plt.show().
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from codeinterp.executors import get_executor

SEED = Path(os.environ.get("CODEINTERP_SHARED", Path(__file__).parents[2] / "shared")) / "seed"
EXAMPLE = SEED / "data_analysis_example.py"

pytestmark = pytest.mark.skipif(
    not EXAMPLE.exists(), reason=f"the seed example is not at {EXAMPLE} (set CODEINTERP_SHARED)"
)


@pytest.mark.parametrize("backend", ["sandbox", "jupyter", "repl", "subprocess", "inprocess"])
def test_seed_example_returns_info_text_and_three_plots(backend: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        executor = get_executor(backend, timeout_s=120)
    with executor, executor.open() as session:
        result = session.execute(EXAMPLE.read_text())
        assert result.error is None, result.error
        assert "RangeIndex: 5 entries" in result.stdout
        assert "score" in result.stdout and "gender" in result.stdout
        pngs = result.images("image/png")
        assert len(pngs) == 3
        assert all(png.startswith(b"\x89PNG") for png in pngs)
        assert len(set(pngs)) == 3  # three different plots, not one shown three times
        if executor.capabilities.stateful:
            after = session.execute("print(df.shape, list(df.columns), df['score'].sum())")
            assert after.stdout == "(5, 4) ['name', 'score', 'age', 'gender'] 350\n"
