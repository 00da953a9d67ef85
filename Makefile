# Two commands: `make run` (demo workflow) and `make test-full` (the whole test suite, what CI
# runs). Both set up .venv if needed. `make test`: the fast tier (no end-to-end or fault tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# Tests and workflow runs never reach model hubs.
export HF_HUB_OFFLINE := 1
# Rules call the `mammodp` CLI installed in the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-full lint bench clean

setup: $(STAMP)

$(STAMP): envs/requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -r envs/requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not workflow and not faults and not slow"

test-full: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check workflow tests
	$(BIN)/ruff format --check workflow tests
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/config.yaml .test/config/config.yaml

clean:
	rm -rf results .snakemake

bench: $(STAMP)
	$(BIN)/python workflow/bench/run_all.py
