# One command each on a fresh machine: `make demo`, `make test`, `make bench`.
# `setup` bootstraps uv if missing and installs the locked environment (idempotent).
SHELL := /bin/bash
# uv on PATH, else the one pip installs (runnable as `python3 -m uv`); re-evaluated at each use
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_PYTHON_DOWNLOADS ?= never
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup browser test demo bench clean

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen

# Headless chromium renders the MLflow UI in tests/orchestrator/test_ui_browser.py. Debian's package,
# installed only as root with apt-get (CI); elsewhere that one test is skipped, never faked.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium </dev/null >/dev/null; \
	else echo "no chromium and no root apt-get: tests/orchestrator/test_ui_browser.py will be skipped"; fi

test: setup browser
	$(UV) run --frozen pytest

demo: setup
	$(UV) run --frozen sotalign demo

bench: setup
	$(UV) run --frozen python -m benchmarks.run

clean:
	rm -rf .pytest_cache demo_output bench_output ray_results
