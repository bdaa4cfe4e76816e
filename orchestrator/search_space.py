"""Search-space files (``search_spaces/*.yaml``): a readable sweep spec compiled for Optuna.

A file holds the sweep's ``name``, a fixed ``base`` experiment (as in a ``train`` file), the
``metric`` and ``mode``, ``num_samples`` / ``max_concurrent``, the ``sampler`` (tpe, random or
grid) and an optional ASHA ``scheduler``, and ``parameters``::

    parameters:
      teacher:     {type: categorical, choices: [procrustes, cca, contrastive]}
      teacher_reg: {type: float, low: 1.0e-3, high: 10, log: true, when: {teacher: cca}}
      data.n_pairs: {type: int, low: 50, high: 1000, log: true}

A parameter name is a key of the experiment (``alpha`` = ``align.alpha``, ``data.n_pairs``,
``method``). ``when`` samples a parameter only in its branch (Optuna define-by-run), where the
branch value comes from an earlier parameter or from ``base``. Every error names the file,
the line and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.experiment_file import read_yaml, split_tree
from orchestrator.overrides import key_path, with_changes
from sotalign.checks import InputError

TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid")
SPACE_KEYS = {"name", "base", "metric", "mode", "num_samples", "max_concurrent", "sampler", "scheduler", "parameters"}
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "when"}


class SearchSpaceError(InputError):
    """A bad search-space file: the message starts with ``file:line``."""


@dataclass
class Parameter:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    when: dict[str, list] = field(default_factory=dict)

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class SearchSpace:
    path: Path
    name: str
    base: dict[str, Any]
    parameters: list[Parameter]  # in sampling order: a parameter comes after those its ``when`` reads
    metric: str = "val/mean_recall_at_1"  # model selection on validation pairs (paper App. A.1)
    mode: str = "max"
    num_samples: int = 8
    max_concurrent: int = 1  # trials at once: total GPUs / GPUs per trial on a cluster
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    scheduler: dict[str, Any] | None = None

    def define_by_run(self, trial) -> None:
        """Optuna define-by-run: suggest every parameter whose ``when`` holds."""
        chosen: dict[str, Any] = {}
        for p in self.parameters:
            if all(self._current(key, chosen) in allowed for key, allowed in p.when.items()):
                chosen[p.name] = p.suggest(trial)

    def _current(self, key: str, chosen: dict[str, Any]) -> Any:
        """A branch key's value in this trial: sampled earlier, else base's (or its default)."""
        return chosen[key] if key in chosen else _lookup(split_tree(self.base)[0].to_dict(), key)

    def experiment_tree(self, params: dict[str, Any]) -> dict[str, Any]:
        """``base`` with a trial's sampled ``params`` applied."""
        return with_changes(self.base, params)

    def grid(self) -> dict[str, list]:
        return {p.name: list(p.choices) for p in self.parameters}

    def build_sampler(self):
        import optuna

        options = {k: v for k, v in self.sampler.items() if k != "type"}
        kind = self.sampler.get("type", "tpe")
        if kind == "grid":
            return optuna.samplers.GridSampler(self.grid(), **options)
        if kind == "random":
            return optuna.samplers.RandomSampler(**options)
        # conditional spaces: multivariate + group model the branches jointly (optuna #5299, docs/notes/anchors.md 4)
        return optuna.samplers.TPESampler(**{"multivariate": True, "group": True, **options})

    def build_scheduler(self, steps: int):
        """ASHA on the training step (every report carries it), or None. ``max_t`` lies past the
        last step so that ASHA stops trials only at its rungs, never on their final report."""
        if not self.scheduler:
            return None
        from ray.tune.schedulers import ASHAScheduler

        options = {
            "grace_period": 1,
            "reduction_factor": 4,
            **{k: v for k, v in self.scheduler.items() if k != "type"},
        }  # Ray's defaults
        if options["grace_period"] > steps:
            raise InputError(
                f"{self.path}: scheduler.grace_period = {options['grace_period']} steps exceeds the {steps} training steps"
            )
        return ASHAScheduler(time_attr="step", max_t=steps + 1, metric=self.metric, mode=self.mode, **options)


def check_name(name: Any, what: str = "name") -> None:
    """A sweep name becomes a folder and an Optuna study: letters, digits, - and _ only."""
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"{what} must be a word of letters, digits, - and _, got {name!r}")


def _lookup(experiment: dict[str, Any], key: str) -> Any:
    """The value of ``key`` (``teacher``, ``data.n_pairs``) in a resolved experiment dict, or None."""
    try:
        parts = key_path(key)
    except InputError:
        return None
    node: Any = experiment
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Line number (1-based) of every mapping key, by its path."""
    found = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            found[path] = key.start_mark.line + 1
            found.update(_lines(value, path))
    return found


def load_search_space(path: str | Path) -> SearchSpace:
    """Read, check and compile a search-space file; every problem names its file, line and key."""
    path = Path(path)
    raw = read_yaml(path)
    lines = _lines(yaml.compose(path.read_text()) or yaml.MappingNode("", []))

    def fail(where: tuple, message: str):
        line = lines.get(where) or 1
        raise SearchSpaceError(f"{path}:{line}: {'.'.join(map(str, where)) + ': ' if where else ''}{message}")

    if not isinstance(raw, dict):
        fail((), "a search space must be a mapping of keys")
    for key in sorted(set(raw) - SPACE_KEYS):
        fail((key,), f"unknown key; expected one of {', '.join(sorted(SPACE_KEYS))}")
    for key in ("name", "base", "parameters"):
        if key not in raw:
            fail((), f"missing required key {key!r}")
    try:
        check_name(raw["name"])
    except InputError as error:
        fail(("name",), str(error).removeprefix("name "))
    if not isinstance(raw["base"], dict):
        fail(
            ("base",),
            "must be an experiment mapping (name, method, seed, data, align, run), optionally with file: PATH",
        )
    try:
        raw["base"] = _resolve_base(raw["base"], path.parent)
        split_tree(raw["base"])
    except InputError as error:
        fail(("base",), str(error))
    if not isinstance(raw["parameters"], dict) or not raw["parameters"]:
        fail(("parameters",), "must map at least one parameter name to its {type, ...}")

    parameters = [
        _parameter(name, spec, lambda sub, msg, n=name: fail(("parameters", n, *sub), msg))
        for name, spec in raw["parameters"].items()
    ]
    names = [p.name for p in parameters]
    resolved = split_tree(raw["base"])[0].to_dict()
    for p in parameters:
        for key, allowed in p.when.items():
            if key in names:
                if names.index(key) > names.index(p.name):
                    fail(("parameters", p.name, "when"), f"depends on {key!r}, which must be listed before it")
                branch = parameters[names.index(key)]
                if branch.choices and any(v not in branch.choices for v in allowed):
                    fail(("parameters", p.name, "when"), f"{key} takes {branch.choices}, not all of {allowed}")
            elif _lookup(resolved, key) is None:
                fail(("parameters", p.name, "when"), f"{key!r} is neither a parameter nor a key of the base experiment")
        for value in p.choices or [p.low, p.high]:
            try:
                split_tree(with_changes(raw["base"], {p.name: value}))
            except InputError as error:
                fail(("parameters", p.name), f"does not fit the experiment: {error}")

    space = SearchSpace(path, raw["name"], raw["base"], parameters)
    for key, kind in (("metric", str), ("mode", str), ("num_samples", int), ("max_concurrent", int)):
        if key in raw:
            if not isinstance(raw[key], kind) or (kind is int and raw[key] < 1):
                fail((key,), f"must be {'a positive integer' if kind is int else 'a string'}, got {raw[key]!r}")
            setattr(space, key, raw[key])
    if space.mode not in ("max", "min"):
        fail(("mode",), f"must be max or min, got {space.mode!r}")
    space.sampler = _sampler(raw.get("sampler") or {"type": "tpe"}, lambda sub, msg: fail(("sampler", *sub), msg))
    if space.sampler["type"] == "grid":
        bad = [p.name for p in parameters if p.type != "categorical" or p.when]
        if bad:
            fail(("sampler", "type"), f"grid needs categorical parameters without `when`; not: {', '.join(bad)}")
        if "num_samples" not in raw:
            space.num_samples = math.prod(len(p.choices) for p in parameters)
    if raw.get("scheduler") is not None:
        scheduler = raw["scheduler"]
        if not isinstance(scheduler, dict) or scheduler.get("type") != "asha":
            fail(("scheduler",), "must be {type: asha, grace_period: STEPS, reduction_factor: N}")
        for key in sorted(set(scheduler) - {"type", "grace_period", "reduction_factor"}):
            fail(("scheduler", key), "unknown ASHA option; expected grace_period (steps), reduction_factor")
        for key in ("grace_period", "reduction_factor"):
            value = scheduler.get(key, 2)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "grace_period" else 2):
                fail(("scheduler", key), f"must be an integer >= {1 if key == 'grace_period' else 2}, got {value!r}")
        space.scheduler = scheduler
    return space


def _resolve_base(base: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``base: {file: experiments/x.yaml, align: {steps: 200}}``: the file (relative to the search
    space), with the other keys of ``base`` laid over it section by section."""
    base = dict(base)
    if "file" not in base:
        return base
    tree = read_yaml(folder / base.pop("file")) or {}
    if not isinstance(tree, dict):
        raise InputError("the base file must hold an experiment mapping")
    for key, value in base.items():
        tree[key] = {**(tree.get(key) or {}), **value} if isinstance(value, dict) else value
    return tree


def _parameter(name: str, spec: Any, fail) -> Parameter:
    try:
        key_path(name)
    except InputError as error:
        fail((), str(error))
    if not isinstance(spec, dict):
        fail((), "must be a mapping like {type: float, low: 0.01, high: 1, log: true}")
    for key in sorted(set(spec) - PARAM_KEYS):
        fail((key,), f"unknown parameter key; expected one of {', '.join(sorted(PARAM_KEYS))}")
    kind = spec.get("type")
    if kind not in TYPES:
        fail(("type",) if "type" in spec else (), f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        fail(("when",), "must map a key to a value or a list of values, e.g. {teacher: cca}")
    when = {str(k): list(v) if isinstance(v, list) else [v] for k, v in when.items()}
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            fail(("choices",) if "choices" in spec else (), "a categorical parameter needs a non-empty list of choices")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            fail(("choices",), "choices must be strings, numbers, booleans or null")
        return Parameter(name, kind, choices=choices, when=when)
    for key in ("low", "high"):
        if not isinstance(spec.get(key), (int, float)) or isinstance(spec.get(key), bool):
            fail((key,) if key in spec else (), f"a {kind} parameter needs a numeric {key}")
    if not spec["low"] < spec["high"]:
        fail(("high",), f"high must be greater than low, got low={spec['low']} high={spec['high']}")
    log = spec.get("log", False)
    if log and spec["low"] <= 0:
        fail(("low",), f"a log-scale parameter needs low > 0, got {spec['low']}")
    if log and spec.get("step") is not None:
        fail(("step",), "step and log cannot be combined (Optuna)")
    return Parameter(name, kind, spec["low"], spec["high"], bool(log), spec.get("step"), when=when)


def _sampler(spec: Any, fail) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("type", "tpe") not in SAMPLERS:
        fail(("type",) if isinstance(spec, dict) else (), f"sampler type must be one of {', '.join(SAMPLERS)}")
    allowed = {"type", "seed"} | (
        {"n_startup_trials", "multivariate", "group"} if spec.get("type", "tpe") == "tpe" else set()
    )
    for key in sorted(set(spec) - allowed):
        fail((key,), f"unknown option for the {spec.get('type', 'tpe')} sampler; expected {', '.join(sorted(allowed))}")
    return {"type": "tpe", **spec}
