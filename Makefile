# The project's entry points. `make start` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install start test lint bench clean

# A virtual environment with everything: the package (editable), Jupyter, the data stack, and
# the test tools. Re-run only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "codeinterp needs Python 3.11 or newer; set PYTHON=python3.11 (or newer) and retry")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The main job. Until the chat loop lands this runs a small analysis through an executor.
start: install
	$(BIN)/codeinterp exec --images-dir plots \
	  -c 'import pandas as pd; df = pd.DataFrame({"x": range(10), "y": [v * v for v in range(10)]})' \
	  -c 'print(df.describe())' \
	  -c 'df.plot(x="x", y="y"); df["y"].sum()'

test: install
	$(BIN)/pytest
	@if [ "$${CI:-}" = true ] && [ "$$(id -u)" = 0 ]; then bash tests/run-as-nonroot.sh; fi

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.executors

clean:
	rm -rf $(VENV) plots bench/results
