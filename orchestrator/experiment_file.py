"""Experiment files: what ``sotalign train CONFIG.yaml`` reads and what a sweep's ``base:`` holds.

The experiment itself (``name``, ``method``, ``seed``, ``data:``, ``align:``; see
``sotalign.experiment``) plus a ``run:`` section saying how Ray runs it. Every key is checked:
an unknown one is named, a malformed file is reported with its line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sotalign.config import coerce_field
from sotalign.experiment import DataSpec, Experiment

from orchestrator.overrides import with_changes


@dataclass
class RunOptions:
    workers: int = 1  # Ray Train workers (data-parallel ranks), coupled in one OT plan; 0 = in the calling process
    gpus_per_worker: float = 0.0  # 1 on a GPU cluster (cluster.yaml), 0 = CPU workers
    cpus_per_worker: float = 1.0  # Ray's default for a Train worker
    checkpoint_every: int = 100  # stage-2 steps between checkpoints (0 = none)
    max_failures: int = 2  # worker failures a run survives, each resumed from the last checkpoint
    storage_path: str = "ray_results"  # checkpoints; on a multi-node cluster a shared path (NFS, s3://)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_field(f"run.{f.name}", getattr(self, f.name), str(f.type)))
        if self.workers < 0 or self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ValueError(f"run needs workers >= 0, gpus_per_worker >= 0 and cpus_per_worker > 0, got "
                             f"{self.workers}, {self.gpus_per_worker}, {self.cpus_per_worker}")
        if self.checkpoint_every < 0 or self.max_failures < 0:
            raise ValueError(f"run.checkpoint_every and run.max_failures must be >= 0, got {self.checkpoint_every}, {self.max_failures}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "RunOptions":
        if not isinstance(values or {}, dict):
            raise ValueError(f"run must be a mapping of keys, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(f"unknown run key(s): {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**(values or {}))


def read_yaml(path: str | Path) -> Any:
    """The parsed file; a missing file or a YAML syntax error names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueError(f"{where}: malformed YAML ({getattr(error, 'problem', None) or error})") from None


def split_tree(tree: dict[str, Any]) -> tuple[Experiment, RunOptions]:
    """An experiment tree (possibly with a ``run:`` section) as its two checked halves."""
    if not isinstance(tree, dict):
        raise ValueError(f"an experiment must be a mapping of keys, got {type(tree).__name__}")
    tree = dict(tree)
    run = RunOptions.from_dict(tree.pop("run", None))
    return Experiment.from_dict(tree), run


def with_absolute_paths(tree: dict[str, Any]) -> dict[str, Any]:
    """``data.store`` and a local ``run.storage_path`` resolved against the current directory, so
    that Ray actors (Tune runs trials in their own folders) read and write the same places."""
    tree = dict(tree)
    data, run = dict(tree.get("data") or {}), dict(tree.get("run") or {})
    data["store"] = str(Path(data.get("store") or DataSpec.store).resolve())
    storage = run.get("storage_path") or RunOptions.storage_path
    run["storage_path"] = storage if "://" in storage else str(Path(storage).resolve())
    return {**tree, "data": data, "run": run}


def load_experiment_file(path: str | Path, changes: dict[str, Any] | None = None) -> tuple[Experiment, RunOptions]:
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: an experiment file must be a mapping of keys, got {type(tree).__name__}")
    try:
        return split_tree(with_absolute_paths(with_changes(tree, changes or {})))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
