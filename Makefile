# One command each on a fresh machine: `make demo`, `make test`, `make bench`.
# `setup` bootstraps uv if missing and installs the locked environment (idempotent).
SHELL := /bin/bash
# uv on PATH, else the one pip installs (runnable as `python3 -m uv`); re-evaluated at each use
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_PYTHON_DOWNLOADS ?= never
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup test demo bench clean

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen

test: setup
	$(UV) run --frozen pytest

demo: setup
	$(UV) run --frozen sotalign demo

bench: setup
	$(UV) run --frozen python benchmarks/run.py

clean:
	rm -rf .pytest_cache demo_output bench_output
