# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both build the virtual environment at .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Strict editable mode installs a link tree, so edgeglm.converters and
# edgeglm.tui resolve to ./converters and ./tui for mypy and pytest alike.
EDITABLE := --config-settings editable_mode=strict

.PHONY: install tmux demo test check lint typecheck reference fixtures demo-model clean snapshots

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(EDITABLE)

demo: install
	$(BIN)/edgeglm demo

# The TUI's end-to-end test drives the real app inside tmux; install it where
# we can (CI runs as root), otherwise that one test skips and says why.
tmux:
	@command -v tmux >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1; } || true

# `python -m pytest`, the way contributors start it (tests/conftest.py keeps
# the bare source folder from shadowing the installed package).
test: install tmux
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check edgeglm converters tui tests scripts benchmarks
	$(BIN)/ruff format --check edgeglm converters tui tests scripts benchmarks

typecheck: install
	$(BIN)/mypy -p edgeglm -p edgeglm.converters -p edgeglm.tui
	$(BIN)/mypy tests scripts benchmarks

# The contributor's one-line check, and what CI runs: lint, types, tests.
check: lint typecheck test

# torch + transformers, only for regenerating fixtures and the demo model.
reference: install
	$(BIN)/python -m pip install --quiet -e '.[dev,reference]' $(EDITABLE)

fixtures: reference
	$(BIN)/python tests/fixtures/make_fixtures.py
	$(BIN)/python tests/fixtures/make_llamacpp_listing.py

demo-model: reference
	$(BIN)/python scripts/train_demo_model.py

# Re-record the TUI's SVG snapshots after an intended UI change.
snapshots: install
	$(BIN)/pytest tests/tui --snapshot-update

clean:
	rm -rf *.egg-info .mypy_cache .pytest_cache .ruff_cache
