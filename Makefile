# Everything installs into .venv; PyTorch is the CPU build pinned below.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint docs bench bench-vectorized toy clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## PBT on the digits MLP (SQLite under runs/digits), the best member and its schedule, then its report
	$(BIN)/poptrain run poptrain.experiments.digits --overwrite
	$(BIN)/poptrain report digits

test: $(STAMP)  ## the whole test suite, slow tests included
	$(BIN)/pytest

lint: $(STAMP)  ## ruff (lint and format) and mypy (strict on the pure packages): zero findings
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/ruff format --check src tests benchmarks experiments examples
	$(BIN)/mypy src/poptrain experiments

docs: $(STAMP)  ## the API reference from the docstrings (mkdocs + mkdocstrings, warnings as errors) under build/site
	$(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)  ## framework overhead against a plain training loop
	$(BIN)/python -m benchmarks.overhead

bench-vectorized: $(STAMP)  ## the vectorized executor against the sequential one and a plain loop; scaling to 1024 members
	$(BIN)/python -m benchmarks.vectorized

toy: $(STAMP)  ## the paper's toy example: PBT, explore-only, exploit-only, grid search
	$(BIN)/python -m poptrain.experiments.toy

clean:
	rm -rf $(VENV) runs
