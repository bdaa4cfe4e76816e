"""Experiment files: what ``sotalign train CONFIG.yaml`` reads and what a sweep's ``base:`` holds.

The experiment itself (``name``, ``method``, ``seed``, ``data:``, ``align:``; see
``sotalign.experiments.experiment``) plus a ``run:`` section saying how Ray runs it. Every key is checked:
an unknown one is named, a malformed file is reported with its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.overrides import with_changes
from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.experiments.experiment import DataSpec, Experiment
from sotalign.fields import check_fields, from_mapping, option


@dataclass
class RunOptions:
    workers: int = option(
        1, minimum=0
    )  # Ray Train workers (data-parallel ranks), coupled in one OT plan; 0 = in the calling process
    gpus_per_worker: float = option(0.0, minimum=0)  # 1 on a GPU cluster (cluster.yaml), 0 = CPU workers
    cpus_per_worker: float = option(1.0, above=0)  # Ray's default for a Train worker
    checkpoint_every: int = option(100, minimum=0)  # stage-2 steps between checkpoints (0 = none)
    max_failures: int = option(2, minimum=0)  # worker failures a run survives, each resumed from the last checkpoint
    storage_path: str = "ray_results"  # checkpoints; on a multi-node cluster a shared path (NFS, s3://)

    def __post_init__(self) -> None:
        check_fields(self, prefix="run.")
        fs.check_no_credentials(self.storage_path, "run.storage_path")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RunOptions:
        return from_mapping(cls, values, "run")


def read_yaml(path: str | Path) -> Any:
    """The parsed file; a missing file or a YAML syntax error names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: malformed YAML ({getattr(error, 'problem', None) or error})") from None


def split_tree(tree: dict[str, Any]) -> tuple[Experiment, RunOptions]:
    """An experiment tree (possibly with a ``run:`` section) as its two checked halves."""
    if not isinstance(tree, dict):
        raise InputError(f"an experiment must be a mapping of keys, got {type(tree).__name__}")
    tree = dict(tree)
    run = RunOptions.from_dict(tree.pop("run", None))
    return Experiment.from_dict(tree), run


def with_absolute_paths(tree: dict[str, Any]) -> dict[str, Any]:
    """A local ``data.store`` and ``run.storage_path`` resolved against the current directory (URIs kept), so
    that Ray actors (Tune runs trials in their own folders) read and write the same places."""
    tree = dict(tree)
    data, run = _section(tree, "data"), _section(tree, "run")
    store, storage = data.get("store") or DataSpec.store, run.get("storage_path") or RunOptions.storage_path
    for key, value in (("data.store", store), ("run.storage_path", storage)):
        if not isinstance(value, str):
            raise InputError(f"{key} must be a path or a URI, got {value!r}")
    data["store"] = fs.absolute(store)
    run["storage_path"] = storage if "://" in storage else str(Path(storage).resolve())
    return {**tree, "data": data, "run": run}


def _section(tree: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of the tree's ``key`` section (empty when absent), which must be a mapping."""
    value = tree.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(f"{key} must be a mapping of keys, got {value!r}")
    return dict(value)


def load_experiment_file(path: str | Path, changes: dict[str, Any] | None = None) -> tuple[Experiment, RunOptions]:
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise InputError(f"{path}: an experiment file must be a mapping of keys, got {type(tree).__name__}")
    try:
        return split_tree(with_absolute_paths(with_changes(tree, changes or {})))
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
