# One command each on a fresh machine: `make demo`, `make test`, `make bench`.
# `setup` bootstraps uv if missing and installs the locked environment (idempotent).
SHELL := /bin/bash
# uv on PATH, else the one pip installs (runnable as `python3 -m uv`); re-evaluated at each use
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_PYTHON_DOWNLOADS ?= never
# .pyc files written at install: where PYTHONDONTWRITEBYTECODE is set (as on these machines) Python
# otherwise compiles torch, ray and mlflow from source in every process, every Ray worker included
# (~30 s of CPU each, measured: a 40-step `sotalign train` 47 s -> 24 s; docs/notes/stack.md)
export UV_COMPILE_BYTECODE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0
# workers run from the project's venv, not through Ray's `uv run` integration (orchestrator/__init__.py)
export RAY_ENABLE_UV_RUN_RUNTIME_ENV ?= 0
# Material for MkDocs prints an end-of-life banner on every build: noise in `make test`
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: setup system lint format docs docs-build test demo bench clean

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen

# Debian packages that tests start for real, installed only as root with apt-get (CI); elsewhere the
# tests that need them are skipped and say why, never faked:
#   chromium                renders the MLflow UI (tests/orchestrator/test_ui_browser.py)
#   openssh-server, rsync   `ray up` / `ray submit` over SSH to 127.0.0.1 (tests/orchestrator/test_launcher.py)
SYSTEM_PACKAGES = chromium:chromium openssh-server:sshd rsync:rsync
system:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		command -v "$${entry#*:}" >/dev/null 2>&1 || [ -x "/usr/sbin/$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing (apt-get) for the browser and launcher tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing </dev/null >/dev/null; \
	else echo "missing$$missing and no root apt-get: the tests that need them will be skipped"; fi

# ruff (pyproject.toml [tool.ruff]): lint and the formatter's check; `make format` rewrites the files
lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: setup
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

# the documentation site (mkdocs.yml, docs/): `make docs` serves it on http://127.0.0.1:8000 and rebuilds on
# every edit; `make docs-build` builds it strictly into site/ (a broken link or anchor, a page missing from
# the nav or a docstring the API reference cannot render fails it), offline
docs: setup
	$(UV) run --frozen mkdocs serve

docs-build: setup
	$(UV) run --frozen mkdocs build --strict --site-dir site

test: setup system lint docs-build
	$(UV) run --frozen pytest

demo: setup
	$(UV) run --frozen sotalign demo

bench: setup
	$(UV) run --frozen python -m benchmarks.run

clean:
	rm -rf .pytest_cache demo_output bench_output ray_results site
