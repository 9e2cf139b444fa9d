# fficube: `make demo` (first run), `make test` and `make docs`; each creates .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install dev docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,docs]'

demo: install
	$(BIN)/fficube demo demo

test: dev
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/mypy
	$(BIN)/python -m pytest
	$(MAKE) docs

# The documentation site, warning-free, with no network (intersphinx only with
# FFICUBE_DOCS_INTERSPHINX=1): docs/_build/html/index.html.
docs: dev
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

bench: dev
	$(BIN)/python benchmarks/bench_local.py

clean:
	rm -rf $(VENV) demo bench-data .pytest_cache docs/_build
