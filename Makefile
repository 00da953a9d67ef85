# Two commands: `make run` (demo workflow) and `make test` (test suite). Both set up .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# Tests and workflow runs never reach model hubs.
export HF_HUB_OFFLINE := 1
# Rules call the `mammodp` CLI installed in the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test lint bench clean

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
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check workflow tests
	$(BIN)/ruff format --check workflow tests
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake

bench: $(STAMP)
	$(BIN)/python workflow/bench/run_all.py
