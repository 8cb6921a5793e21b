# jestflow: `make demo` runs the main job on the embedded demo data, `make test` runs the tests.
# Both create the virtual environment first. See DEVELOPERS.md for the torch pin.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on this project's machines; override for CUDA, e.g. TORCH=torch==2.13.0+cu128
TORCH ?= torch==2.13.0
# Every other package of the development environment, every extra included, pinned: `make setup`
# installs exactly this file, `make lock` refreshes it (DEVELOPERS.md: the lock).
LOCK ?= requirements.lock
PIP_VERSION ?= 26.3
PIP_TOOLS ?= pip-tools==7.7.0
EXTRAS := hf,minilm,gcs,s3,dev,docs
DEMO ?= build/demo
PYTEST ?= $(BIN)/python -m pytest

.PHONY: setup lock demo test test-kernels test-broken test-slow test-latest lint docs docs-serve bench clean

setup: $(VENV)/.installed

# torch and the lock in one resolve (the lock leaves torch out: its build is TORCH's choice), then
# jestflow itself without dependencies and without build isolation (setuptools is in the lock).
$(VENV)/.installed: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "pip==$(PIP_VERSION)"
	$(BIN)/pip install -q "$(TORCH)" -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Refresh the lock to the newest versions pyproject.toml's ranges allow, resolved against TORCH
# (run `make test-latest` first: it tests exactly those versions).
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q "pip==$(PIP_VERSION)" "$(PIP_TOOLS)"
	echo "$(TORCH)" > build/torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" build/lock-venv/bin/pip-compile --quiet --upgrade \
		--strip-extras --no-emit-index-url --no-emit-find-links --extra $(EXTRAS) \
		--unsafe-package torch --unsafe-package jestflow -c build/torch-constraint.txt \
		-o $(LOCK) pyproject.toml

# The fast suite in a fresh venv with the newest versions the ranges allow (TORCH kept): finds
# upstream drift on purpose, before `make lock`. Not part of CI.
LATEST := build/latest-venv
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q "pip==$(PIP_VERSION)"
	$(LATEST)/bin/pip install -q "$(TORCH)"
	$(LATEST)/bin/pip install -q -e ".[$(EXTRAS)]"
	$(LATEST)/bin/pip freeze --all --exclude-editable | tr 'A-Z_' 'a-z-' \
		| grep -v '^\(pip\|torch\)==' | sort > build/latest-versions.txt
	diff <(grep '^[a-z0-9]' $(LOCK) | sort) build/latest-versions.txt \
		&& echo "test-latest: the newest versions are the lock's" \
		|| echo "test-latest: the newest versions differ from $(LOCK) (<: lock, >: newest)"
	$(LATEST)/bin/ruff check . && $(LATEST)/bin/ruff format --check .
	JESTFLOW_UNLOCKED=1 $(LATEST)/bin/python -m pytest -m "not slow and not minilm"

# The demo's text pairs are scored by the offline MiniLM (extra `minilm`), calibrated on the
# reference pairs; without it `jestflow demo` falls back to the built-in teacher and says so.
demo: setup
	$(BIN)/jestflow demo --output $(DEMO) --overwrite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PYTEST) -m "not slow and not minilm"

# The tests whose results hang on the CPU kernels (marked `kernels`: training, and scores that
# must agree across batchings and processes) on other kernels than this machine picks: torch's
# own (ATen) and oneDNN's choose by instruction set, and training results differ between them in
# the last bits, so a bound tuned on one machine fails on another. bench/margins.py measures the
# bounds' margins.
OTHER_KERNELS ?= ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
test-kernels: setup
	env $(OTHER_KERNELS) $(PYTEST) -m "kernels and not slow and not minilm"

# Every `learned` test once with models that cannot learn (learning rates ~0): fails unless each
# bound they record fails, and unless each of them that ran recorded one.
test-broken: setup
	$(BIN)/python bench/margins.py --broken-only --settings native --seeds 0

# Slower tests, and the adapter test on the offline MiniLM package (extra `minilm`).
test-slow: setup
	$(PYTEST) -m "slow or minilm"

# The documentation site (mkdocs.yml, docs/) into build/site: --strict fails on a broken link, a
# missing page or anchor, or a docstring the API reference cannot read. The results page and its
# plots are generated from bench/results.json as it builds.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
docs: setup
	$(MKDOCS) build --strict

docs-serve: setup
	$(MKDOCS) serve

bench: setup
	$(BIN)/python bench/selection.py
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/data_efficiency.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/margins.py
	$(BIN)/python bench/cpu_kernels.py
	$(BIN)/python bench/gpu.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache

# ---- Dataflow (deploy/): the worker image, curate on Dataflow, the Flex Template ----------------
# deploy/README.md explains these. Settings (or the script's JESTFLOW_* environment variables):
#   PROJECT, REGION, TEMP_LOCATION (gs://…), IMAGE (REGION-docker.pkg.dev/PROJECT/REPO/jestflow:TAG),
#   TEMPLATE (gs://…/jestflow-curate.json), GPU (a worker_accelerator spec, or none),
#   MACHINE_TYPE, ARGS: curate's arguments (dataflow-run) or NAME=VALUE parameters (dataflow-run-template).
# e.g. make dataflow-run PROJECT=p REGION=us-central1 TEMP_LOCATION=gs://b/tmp IMAGE=… \
#        ARGS="'gs://b/pool/*.jsonl' -o gs://b/curated --teacher gs://b/teacher --task lm --keep 0.2"
DATAFLOW_FLAGS = $(if $(PROJECT),--project '$(PROJECT)') $(if $(REGION),--region '$(REGION)') \
	$(if $(TEMP_LOCATION),--temp-location '$(TEMP_LOCATION)') $(if $(IMAGE),--image '$(IMAGE)') \
	$(if $(TEMPLATE),--template '$(TEMPLATE)') $(if $(GPU),--gpu '$(GPU)') \
	$(if $(MACHINE_TYPE),--machine-type '$(MACHINE_TYPE)')
DATAFLOW = deploy/dataflow.sh $(DATAFLOW_FLAGS)

.PHONY: dataflow-setup dataflow-image dataflow-push dataflow-run dataflow-template dataflow-run-template

# What launching on Dataflow needs in .venv beside the lock (gcsfs is in it): apache-beam's GCP
# extras at the lock's Beam version, the image's, with every locked package held where it is.
dataflow-setup: $(VENV)/.dataflow-installed

$(VENV)/.dataflow-installed: $(VENV)/.installed
	$(BIN)/pip install -q -c $(LOCK) "apache-beam[gcp]==$$(sed -n 's/^apache-beam==//p' $(LOCK))"
	touch $@

dataflow-image:
	$(DATAFLOW) build

dataflow-push:
	$(DATAFLOW) push

dataflow-run: dataflow-setup
	JESTFLOW=$(BIN)/jestflow $(DATAFLOW) run $(ARGS)

dataflow-template:
	$(DATAFLOW) template

dataflow-run-template:
	$(DATAFLOW) run-template $(ARGS)
