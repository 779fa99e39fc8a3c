# One place for the commands the README and CI use (STYLE P15).
#   make demo    install into .venv and run the demo pipeline on the embedded corpus
#   make check   install into .venv (with test extras) and run ruff, mypy and the test suite
# torch is installed first and pinned to the CPU build that lies on this machine, so the package's
# `torch>=2.2` range adds nothing (an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install install-test demo check lint typecheck test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[interp,browser]'

install-test: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'

demo: install
	$(BIN)/monosemantic demo

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# mypy reads its settings (files, the third-party modules without hints) from pyproject.toml.
typecheck:
	$(BIN)/mypy

test:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest

check: install-test lint typecheck test
