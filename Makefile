# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both build the virtual environment at .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Strict editable mode installs a link tree, so edgeglm.converters and
# edgeglm.tui resolve to ./converters and ./tui for mypy and pytest alike.
EDITABLE := --config-settings editable_mode=strict

.PHONY: engine install tmux demo test check lint typecheck reference fixtures demo-model clean snapshots

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama.cpp (llama-cpp-python) built for this machine's hardware: CUDA, Metal,
# HIP, Vulkan or CPU, always with the RPC backend. The one command that
# rebuilds it; EDGEGLM_LLAMA_BACKEND=cpu|cuda|metal|hip|vulkan overrides the
# choice and CMAKE_ARGS from the environment are added last. Wheels are cached
# by version, backend, CMAKE_ARGS, Python and platform in
# ~/.cache/edgeglm/engine, so only a new combination compiles. By file path:
# it runs before edgeglm and its dependencies are installed.
engine: $(BIN)/python
	$(BIN)/python edgeglm/hardware/engine.py

# The engine first, so pip finds llama-cpp-python already satisfied.
install: $(BIN)/python engine
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
