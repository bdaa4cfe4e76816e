"""``sotalign sweep SEARCH_SPACE.yaml``: Ray Tune + Optuna over experiments, tracked in MLflow.

The file is a path, or the name of a shipped search space (``sotalign sweep smoke``; ``--list``
prints them with the question each asks: orchestrator/shipped.py).

Each trial is a Tune function that runs one ``sotalign train`` experiment (a ``TorchTrainer``
with ``TuneReportCallback``), so a trial is itself data-parallel and fault tolerant. The
Optuna study lives in sqlite beside the sweep (``<storage>/sweeps/<name>/optuna.db``), an
optional ASHA scheduler stops weak trials early, and ``--resume`` continues a stopped sweep:
finished trials are kept, unfinished ones resume from their checkpoints, and the study keeps
its history. MLflow: one parent run per sweep and one child run per trial; the parent gets the
best config, the results table (Markdown + CSV) and a plot of the metric against each parameter.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from orchestrator import logs, shipped, tracking
from orchestrator.cluster import check_cluster_fit, check_storage, connect_ray
from orchestrator.embed import ensure_tables
from orchestrator.experiment_file import split_tree, with_absolute_paths
from orchestrator.hints import command
from orchestrator.overrides import add_set_argument, parse_assignments, with_changes
from orchestrator.placement import free_job_worker_groups, remove_leaked_placement_groups
from orchestrator.redaction import redact_tree
from orchestrator.search_space import SearchSpace, check_name, load_search_space
from orchestrator.train import train_experiment
from sotalign.checks import InputError
from sotalign.io import atomic_path

STATE = "sweep.json"
TEST_METRICS = ("mean_recall_at_1", "t2i_recall_at_1", "i2t_recall_at_1", "t2i_recall_at_5", "digits_top1")
log = logging.getLogger(__name__)


def add_parser(commands) -> None:
    p = commands.add_parser("sweep", help="run a search_spaces/*.yaml sweep with Ray Tune + Optuna, logged to MLflow")
    p.add_argument(
        "space",
        nargs="?",
        help="search-space file, e.g. search_spaces/epsilon.yaml, or the name of a shipped one, e.g. smoke",
    )
    p.add_argument("--list", action="store_true", help="print the shipped search spaces and the question each asks")
    p.add_argument(
        "--resume", action="store_true", help="continue the stopped sweep of this name (keeps finished trials)"
    )
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: num_samples of the file)")
    p.add_argument(
        "--max-concurrent", type=int, default=None, help="trials at once (default: max_concurrent of the file)"
    )
    p.add_argument(
        "--name", default=None, help="sweep name (default: name of the file); one folder and one MLflow parent run each"
    )
    add_set_argument(p, "override a base key for every trial: data.n_pairs=100, steps=200, run.workers=2")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(f"shipped search spaces ({shipped.folder()}), run with: {command('sweep', 'NAME')}\n")
        print(shipped.listing())
        return 0
    if args.space is None:
        raise InputError(f"name a search space: a file, or a shipped one ({command('sweep', '--list')})")
    space = load_search_space(shipped.resolve(args.space))
    space.base = with_changes(space.base, parse_assignments(args.overrides))
    split_tree(space.base)  # the overridden base is still a valid experiment
    for flag, value in (("--num-samples", args.num_samples), ("--max-concurrent", args.max_concurrent)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
        if value is not None and args.resume:
            raise InputError(f"{flag} cannot change on --resume: a resumed sweep keeps the settings it started with")
    if args.name is not None:
        check_name(args.name, "--name")
    space.name = args.name or space.name
    space.num_samples = args.num_samples or space.num_samples
    space.max_concurrent = args.max_concurrent or space.max_concurrent
    uri = tracking.tracking_uri(args.tracking_uri)
    summary = run_sweep(space, uri, resume=args.resume)
    if summary["interrupted"]:
        again = [args.space, "--name", space.name, *(w for o in args.overrides for w in ("--set", o)), "--resume"]
        print(f"sweep interrupted; continue it with: {command('sweep', *again, uri=uri)}")
        return 130
    print(summary["table"])
    print(f"\nbest {space.metric}: {summary['best_value']:.2f} with {summary['best_params']}")
    print(
        f"results: {summary['folder']}; MLflow parent run {summary['parent_run_id']}; "
        f"browse with: {command('ui', uri=uri)}"
    )
    return 0


def sweep_folder(space: SearchSpace) -> Path:
    """Where the sweep keeps its Tune state, Optuna study and results: on the driver's disk (trial
    drivers run on the head node); under ``run.storage_path`` unless that is a cloud URI, which
    then holds only the Train checkpoints."""
    storage = split_tree(space.base)[1].storage_path
    return Path(storage if "://" not in storage else "ray_results").resolve() / "sweeps" / space.name


def _fingerprint(space: SearchSpace) -> dict[str, Any]:
    """What a resumed sweep must share with the one it continues."""
    return json.loads(
        json.dumps(
            {
                "base": space.base,
                "parameters": [dataclasses.asdict(p) for p in space.parameters],
                "metric": space.metric,
                "mode": space.mode,
                "sampler": space.sampler,
                "scheduler": space.scheduler,
            }
        )
    )


def run_sweep(space: SearchSpace, uri: str, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the sweep; return the summary also logged to the parent run
    (``interrupted``: the driver was stopped before every trial ended, nothing summarised)."""
    import ray
    from ray import tune

    tracking.ensure_reachable(uri)
    space.base = with_absolute_paths(space.base)
    space.base.setdefault("name", space.name)  # an unnamed base logs to an MLflow experiment of the sweep's own
    folder = sweep_folder(space)
    state_file, tune_folder = folder / STATE, folder / "tune"
    if resume:
        if not state_file.is_file() or not tune_folder.is_dir():
            raise InputError(f"nothing to resume: no started sweep {space.name!r} at {folder}")
        state = json.loads(state_file.read_text())
        if state["space"] != _fingerprint(space):
            raise InputError(
                f"the search space of sweep {space.name!r} changed since it started (file or --set); "
                "resume it unchanged, or start another with --name"
            )
    elif state_file.is_file():
        raise InputError(
            f"sweep {space.name!r} already exists at {folder}: add --resume to continue it, or --name to start another"
        )
    experiments = _experiments_of(space)
    base_experiment = experiments[0]
    if any(p.name == "run.workers" for p in space.parameters):
        raise InputError(
            "run.workers cannot be a sweep parameter: a trial's resources (an actor's CPU for workers: 0, "
            "a Train driver otherwise) are fixed for the sweep; set it in base"
        )
    scheduler = space.build_scheduler(base_experiment.align.steps)
    check_storage(experiments, split_tree(space.base)[1])
    ids = ensure_tables(experiments)  # embeds the bundled data for every encoder pair once, here
    connect_ray()
    check_cluster_fit(uri, split_tree(space.base)[1], _store_read(base_experiment))
    if ray.cluster_resources().get("TRAIN_DRIVER_RESOURCE", 0) < 0.01:
        raise InputError(
            "the Ray cluster has no TRAIN_DRIVER_RESOURCE for trial drivers: start it with "
            "--resources='{\"TRAIN_DRIVER_RESOURCE\": 4}' on the head (cluster.yaml does)"
        )

    if resume:
        parent_run_id = state["parent_run_id"]
    else:
        tags = {"sweep": space.name, "dataset": base_experiment.data.dataset, "search_space": str(space.path)}
        parent_run_id = tracking.start_run(
            uri,
            base_experiment.name,
            f"sweep-{space.name}",
            tags,
            {"metric": space.metric, "mode": space.mode, "num_samples": space.num_samples},
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, space=space, uri=uri, ids=ids, parent_run_id=parent_run_id, log_level=logs.level()
        ),
        _trial_resources(split_tree(space.base)[1]),
    )
    with tracking.ending_run(uri, parent_run_id) as outcome:
        if resume:
            tuner = tune.Tuner.restore(str(tune_folder), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _new_tuner(space, trainable, scheduler, folder)
            with atomic_path(state_file) as tmp:
                tmp.write_text(json.dumps({"parent_run_id": parent_run_id, "space": _fingerprint(space)}))
        results = tuner.fit()
        if freed := free_job_worker_groups():  # a stopped trial's workers must not starve what runs next
            log.info("freed %d worker placement group(s) that stopped trials left behind", freed)
        _close_stopped_trials(uri, parent_run_id, base_experiment.name, results)
        summary = {
            "interrupted": results.num_terminated + results.num_errors < space.num_samples,
            "parent_run_id": parent_run_id,
            "folder": str(folder),
            "experiment": base_experiment.name,
        }
        if summary["interrupted"]:  # Tune returns normally on Ctrl-C: no summary of a partial sweep
            outcome["status"] = "KILLED"
        else:
            summary.update(summarize(space, results, folder))
            _log_summary(uri, parent_run_id, space, summary, folder)
    return summary


def _trial_resources(options) -> dict[str, float]:
    """A trial that trains in its own actor (``run.workers: 0``) holds the worker's CPU/GPU; one
    that drives Train workers takes none of theirs, only a token custom resource (docs/notes/stack.md)."""
    if options.workers == 0:
        return {"CPU": options.cpus_per_worker, **({"GPU": options.gpus_per_worker} if options.gpus_per_worker else {})}
    return {"TRAIN_DRIVER_RESOURCE": 0.01}


def _new_tuner(space: SearchSpace, trainable, scheduler, folder: Path):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    folder.mkdir(parents=True, exist_ok=True)
    searcher = OptunaSearch(
        space=space.define_by_run,
        metric=space.metric,
        mode=space.mode,
        sampler=space.build_sampler(),
        study_name=space.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}"),
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=space.num_samples,
            max_concurrent_trials=space.max_concurrent,
        ),
        run_config=tune.RunConfig(name="tune", storage_path=str(folder), verbose=1),  # status tables, not every result
    )


def _experiments_of(space: SearchSpace):
    """The base experiment, plus one per categorical choice (each encoder pair must be embedded)."""
    trees = [space.base] + [
        space.experiment_tree({p.name: c}) for p in space.parameters if p.choices for c in p.choices
    ]
    return [split_tree(tree)[0] for tree in trees]


def _store_read(experiment) -> str | None:
    """The embedding store a trial reads, None for synthetic data (no store)."""
    return experiment.data.store if experiment.data.tables() else None


def _close_stopped_trials(uri: str, parent_run_id: str, experiment: str, results) -> None:
    """Child runs of trials Tune stopped (ASHA) end KILLED: those still RUNNING after the sweep,
    and those the stop reached as an error first (the trial's Train run is torn down under it)."""
    stopped = {
        (r.metrics or {}).get("trial_id")
        for r in results
        if not r.error and "mean_recall_at_1" not in (r.metrics or {})
    }
    children = tracking.client(uri).search_runs(
        [tracking.experiment_id(uri, experiment)], f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    for run in children:
        if run.info.status == "RUNNING" or (run.info.status == "FAILED" and run.data.tags.get("trial_id") in stopped):
            tracking.end_run(uri, run.info.run_id, "KILLED")


def run_trial(params: dict, space: SearchSpace, uri: str, ids: dict, parent_run_id: str, log_level: int) -> None:
    """One trial (runs in Tune's trial actor): the base experiment with ``params``, as a Train run;
    its progress lines (``log_level``: the driver's) name the trial and its parameters."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    logs.configure(log_level)
    trial_id = tune.get_context().get_trial_id()
    experiment, options = split_tree(space.experiment_tree(params))
    previous = tracking.client(uri).search_runs(  # a resumed trial continues its own child run
        [tracking.experiment_id(uri, experiment.name)],
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.trial_id = '{trial_id}'",
    )
    if previous and (final := tracking.final_metrics(uri, previous[0])) is not None:
        # it finished after Tune last saved the sweep's state (the driver stopped in between):
        # Tune resumes it as unfinished, but its run is complete, so report its results again
        log.info("trial %s had finished before the sweep stopped: not re-run", trial_id)
        tune.report(final)
        return
    if options.workers:  # a trial driving Train workers runs on the head, where the State API (the dashboard) is
        remove_leaked_placement_groups()  # of trials stopped earlier in this sweep
    check_cluster_fit(uri, options, _store_read(experiment))  # here too: nodes may have joined since submit
    in_process = {"report": tune.report} if options.workers == 0 else {"callbacks": [TuneReportCallback()]}
    run_id = previous[0].info.run_id if previous else None
    train_experiment(
        experiment,
        options,
        uri,
        ids,
        name=f"{space.name}-{trial_id}",
        parent_run_id=parent_run_id,
        run_id=run_id,
        tags={"sweep": space.name, "trial_id": trial_id},
        label=f"{space.name}-{trial_id} " + ", ".join(f"{k}={_short(v)}" for k, v in params.items()),
        **in_process,
    )


def _short(value: Any) -> str:
    """A parameter value as a progress line shows it (floats to 3 significant digits)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summarize(space: SearchSpace, results, folder: Path) -> dict[str, Any]:
    """The results table (one row per trial), the best trial, and the files written to ``folder``."""
    names = [p.name for p in space.parameters]
    rows = []
    for result in results:
        metrics = result.metrics or {}
        rows.append(
            {
                "trial": metrics.get("trial_id", Path(str(result.path)).name),
                "status": "error" if result.error else ("stopped" if "mean_recall_at_1" not in metrics else "done"),
                **{n: result.config.get(n) for n in names},
                space.metric: metrics.get(space.metric),
                **{m: metrics.get(m) for m in TEST_METRICS if m in metrics},
            }
        )
    scored = [r for r in rows if r["status"] == "done" and isinstance(r[space.metric], (int, float))]
    if not scored:
        raise InputError(
            f"no trial of sweep {space.name!r} finished with {space.metric!r}: "
            + (_input_error(results) or "see the trial errors above")
        )
    best = (max if space.mode == "max" else min)(scored, key=lambda r: r[space.metric])
    columns = list(dict.fromkeys(k for r in rows for k in r))
    shown = redact_tree(rows)  # the files hold no secret (orchestrator/redaction.py)
    table = _markdown(shown, columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(shown)
    best_tree = redact_tree(space.experiment_tree({n: best[n] for n in names if best[n] is not None}))
    for name, text in (
        ("results.md", table + "\n"),
        ("results.csv", buffer.getvalue()),
        ("best_config.yaml", yaml.safe_dump(best_tree, sort_keys=False)),
    ):
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text)
    from orchestrator.plots import plot_metric_vs_params

    plot_metric_vs_params(scored, space.metric, names, folder / "metric_vs_params.png")
    return {"rows": rows, "table": table, "best_params": {n: best[n] for n in names}, "best_value": best[space.metric]}


def _input_error(results) -> str | None:
    """The message of an ``InputError`` a trial raised (bad input found where the trial started, e.g. a
    store that node does not see), from the trials' errors; None when none was one."""
    marker = f"{InputError.__module__}.{InputError.__name__}: "
    for result in results:
        lines = [line for line in str(result.error or "").splitlines() if line.startswith(marker)]
        if lines:
            return lines[-1][len(marker) :]
    return None


def _markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _log_summary(uri: str, parent_run_id: str, space: SearchSpace, summary: dict, folder: Path) -> None:
    client = tracking.client(uri)
    tracking.log_metrics(uri, parent_run_id, {f"best/{tracking.metric_key(space.metric)}": summary["best_value"]})
    # tags, not params: a resumed sweep may update them
    tracking.set_tags(uri, parent_run_id, {f"best.{name}": value for name, value in summary["best_params"].items()})
    for file in ("results.md", "results.csv", "best_config.yaml", "metric_vs_params.png"):
        client.log_artifact(parent_run_id, str(folder / file))
