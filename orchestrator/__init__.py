"""The orchestrator: the ``sotalign`` command line, Ray Train runs, Ray Tune + Optuna sweeps and
the MLflow conventions.

Holds no method logic: everything it runs comes from the ``sotalign`` library.
"""

import os

from orchestrator.progress import LINE_PATTERN

# Ray's uv integration (on by default) starts every worker of a driver run under `uv run` as
# `uv run python ...` in a copy of the working directory, with a venv of its own built there:
# seconds to minutes per job on a small machine, and the workers run a copy of the code. The
# orchestrator's workers run from the environment they were started in (the project's venv on
# every node of a cluster file), so that is pure overhead (docs/notes/stack.md, measured).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

# Ray prints like lines of several processes within 5 s once, as "[repeated Nx across cluster]"
# (words holding digits ignored): never the progress lines of concurrent trials. Read when ray is
# first imported, so here, before any module imports it.
os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", LINE_PATTERN)
