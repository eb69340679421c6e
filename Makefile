# One task runner: CI calls these targets as they are.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline, quiet: no telemetry from any tool in the stack.
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_TELEMETRY_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install repro test lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the build that installs from local disk (pip; uv/poetry would download GBs)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: rebuild the whole pipeline on the embedded synthetic default.
## `make repro PROFILE=acdc-roi-cpu` runs it on real data instead, as a named DVC experiment (profiles/).
repro: $(STAMP)
	@[ -d .dvc ] || $(BIN)/dvc init --quiet
ifdef PROFILE
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline.profiles $(PROFILE) --exp
else
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
endif

## The test suite (offline, CPU), after the linter, the type checker and the dvc.lock guard
## (pipeline.orchestration.lock_status).
test: $(STAMP)
	$(BIN)/ruff check pipeline stages tests benchmarks
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline.orchestration.lock_status
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests benchmarks
	$(BIN)/ruff format --check pipeline stages tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.data_bench
	$(BIN)/python -m benchmarks.model_bench

clean:
	rm -rf $(VENV)
