# One command each on a fresh machine: `make demo`, `make test`, `make bench`.
# `setup` bootstraps uv if missing and installs the locked environment (idempotent).
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_PYTHON_DOWNLOADS ?= never
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup test demo bench clean

setup:
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv
	@$$(command -v uv || echo "$(UV)") sync --frozen

test: setup
	@$$(command -v uv || echo "$(UV)") run --frozen pytest

demo: setup
	@$$(command -v uv || echo "$(UV)") run --frozen sotalign demo

bench: setup
	@$$(command -v uv || echo "$(UV)") run --frozen python benchmarks/run.py

clean:
	rm -rf .pytest_cache demo_output bench_output
