"""`sotalign sweep` on the session's Ray cluster: Optuna (persistent study) + Tune + MLflow parent
and child runs; a sweep whose driver is killed after its first trial resumes without re-running
it. Also: every shipped search space compiles, and bad files are named with their line."""

import contextlib
import csv
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.experiment_file import split_tree
from orchestrator.placement import free_job_worker_groups, remove_leaked_placement_groups
from orchestrator.search_space import SearchSpaceError, load_search_space

ROOT = Path(__file__).resolve().parents[2]
ICONIFY_EMOJI_POOL = 12779  # pool images of iconify-emoji (README, measured): too large a set to fetch in tests
SPACE = {
    "name": "tiny",
    "base": {
        "name": "synthetic",
        "data": {"dataset": "synthetic", "n_pairs": 32, "n_unpaired": 300, "n_val": 60},
        "align": {"head_dim": 16, "steps": 40, "batch_unpaired": 64, "lr": 1e-3, "log_every": 20, "eval_every": 20},
        "run": {"workers": 1, "checkpoint_every": 20},
    },
    "metric": "val/mean_recall_at_1",
    "num_samples": 3,
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
    "parameters": {
        "teacher": {"type": "categorical", "choices": ["cca", "procrustes"]},
        "teacher_reg": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": {"teacher": "cca"}},
        "eps_student": {"type": "float", "low": 0.03, "high": 0.2, "log": True},
    },
}


def sweep(tmp_path, ray_address, *extra):
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    command = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "sweep",
        str(tmp_path / "tiny.yaml"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def completed_trials(db):
    """Complete trials in the sweep's Optuna storage, read-only (optuna.load_study would race the
    sweep's own creation of the schema)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def worker_groups():
    """Ids of the cluster's placement groups that are not removed, except Tune trial drivers'."""
    from ray.util.placement_group import placement_group_table

    return {
        i
        for i, g in placement_group_table().items()
        if g["state"] != "REMOVED" and not any("TRAIN_DRIVER_RESOURCE" in b for b in g["bundles"].values())
    }


def children(client, parent):
    """The trial runs of a sweep: in its parent run's experiment."""
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")


def test_sweep_killed_after_one_trial_resumes(ray_cluster, tmp_path):
    # trials in their Tune actors (workers: 0): what is resumed is the sweep (Optuna study, Tune state,
    # MLflow parent); a Train run resumed from its checkpoint is test_train's and test_multinode's
    run = {**SPACE["base"]["run"], "workers": 0, "storage_path": str(tmp_path / "ray")}
    space = {**SPACE, "base": {**SPACE["base"], "run": run}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space))
    folder = tmp_path / "ray" / "sweeps" / "tiny"
    study = lambda: optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")  # noqa: E731
    first = sweep(tmp_path, ray_cluster)
    deadline = time.monotonic() + 900  # bounds a failure only: the loop ends on the event
    # kill the driver once one trial is complete in the study and in Tune's saved experiment state
    while True:
        assert first.poll() is None and time.monotonic() < deadline, (
            first.stdout.read() if first.poll() is not None else "timeout"
        )
        done = completed_trials(folder / "optuna.db") >= 1
        states = list((folder / "tune").glob("experiment_state*.json"))
        if done and states and '\\"TERMINATED\\"' in states[0].read_text():
            break
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    parent = json.loads((folder / "sweep.json").read_text())["parent_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    finished = [r for r in children(client, parent) if r.info.status == "FINISHED"]
    # killed before the sweep ended; its two concurrent trials may both have finished by then
    assert 1 <= len(finished) < 3 and len(study().trials) < 4
    kept = {r.data.tags["trial_id"]: r for r in finished}

    second = sweep(tmp_path, ray_cluster, "--resume")
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-3000:]
    trials = study().trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 3 and len(trials) == 3
    assert all(("teacher_reg" in t.params) == (t.params["teacher"] == "cca") for t in trials)  # conditional
    runs = children(client, parent)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    for trial_id, before in kept.items():  # a finished trial is not re-run
        again = next(r for r in runs if r.data.tags["trial_id"] == trial_id)
        assert again.info.run_id == before.info.run_id and again.info.end_time == before.info.end_time
    assert all(
        r.data.tags["encoder_pair"] and r.data.tags["sweep"] == "tiny" and "mean_recall_at_1" in r.data.metrics
        for r in runs
    )
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"config.yaml", "eval.json", "model"}
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and "best/val/mean_recall_at_1" in top.data.metrics
    assert {a.path for a in client.list_artifacts(parent)} == {
        "results.md",
        "results.csv",
        "best_config.yaml",
        "metric_vs_params.png",
    }
    table = (folder / "results.md").read_text()
    assert table.count("| done |") == 3 and "teacher_reg" in table
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    split_tree(best)  # the best config is a runnable experiment
    assert "best" in out and "results:" in out


def test_a_resumed_trial_whose_run_had_finished_reports_it_and_is_not_rerun(ray_cluster, tmp_path):
    # the driver can stop after a trial's run ended FINISHED but before Tune saved the trial as
    # ended: Tune then resumes it as unfinished, and the trial must report its run, not train again
    from ray import tune

    from orchestrator import tracking
    from orchestrator.sweep import run_trial

    run = {**SPACE["base"]["run"], "workers": 0, "storage_path": str(tmp_path / "ray")}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**SPACE, "base": {**SPACE["base"], "run": run}}))
    space, uri = load_search_space(tmp_path / "tiny.yaml"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_run(uri, "synthetic", "sweep-tiny", {"sweep": "tiny"}, {})
    final = {"mean_recall_at_1": 41.5, "val/mean_recall_at_1": 38.25, "step": 40.0}

    def resumed_trial(params):  # the run as the stopped sweep left it, then the trial as Tune resumes it
        trial_id = tune.get_context().get_trial_id()
        tags = {"sweep": "tiny", "trial_id": trial_id}
        run_id = tracking.start_run(uri, "synthetic", f"tiny-{trial_id}", tags, {}, parent)
        tracking.client(uri).log_text(run_id, json.dumps(final), "eval.json")
        tracking.end_run(uri, run_id)
        run_trial(params, space=space, uri=uri, ids={}, parent_run_id=parent, log_level=logging.INFO)

    params = {"teacher": "procrustes", "eps_student": 0.1}
    tuner = tune.Tuner(
        tune.with_resources(resumed_trial, {"CPU": 1}),
        param_space=params,
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
    )
    [result] = tuner.fit()
    assert result.error is None and {k: result.metrics[k] for k in final} == final
    [run] = children(MlflowClient(uri), parent)
    again = MlflowClient(uri).get_run(run.info.run_id)
    assert again.info.status == "FINISHED" and again.info.end_time == run.info.end_time
    assert again.data.metrics == {}  # nothing trained or logged after the run had ended


def test_only_a_finished_run_with_readable_results_counts_as_done(tmp_path, caplog):
    from orchestrator import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {name: tracking.start_run(uri, "synthetic", name, {}, {}) for name in ("done", "torn", "running")}
    tracking.client(uri).log_text(runs["done"], json.dumps({"mean_recall_at_1": 41.5}), "eval.json")
    tracking.end_run(uri, runs["done"])
    tracking.end_run(uri, runs["torn"])  # FINISHED, yet its eval.json is gone (deleted, or never reached the store)
    got = {name: tracking.final_metrics(uri, tracking.client(uri).get_run(run_id)) for name, run_id in runs.items()}
    assert got == {"done": {"mean_recall_at_1": 41.5}, "torn": None, "running": None}
    assert f"finished run {runs['torn']}: its eval.json cannot be read" in caplog.text


def test_asha_stops_a_weak_trial_and_its_run_is_closed(ray_cluster, tmp_path):
    # its own driver process, as a user's sweep; Ray Train occasionally leaks the stopped trial's
    # placement group (README "Known limits"), which the sweep must free
    space = {
        **SPACE,
        "name": "tiny",
        "num_samples": 2,
        "sampler": {"type": "grid", "seed": 1},  # seed 1: the good lr first
        "scheduler": {"type": "asha", "grace_period": 10, "reduction_factor": 2},
        "base": {
            **SPACE["base"],
            # random heads: at lr 1e-9 they stay at chance (started at the teacher, they would score as it does)
            "align": {**SPACE["base"]["align"], "eval_every": 10, "head_init": "random"},
            "run": {**SPACE["base"]["run"], "storage_path": str(tmp_path / "ray")},
        },
        "parameters": {"lr": {"type": "categorical", "choices": [1e-2, 1e-9]}},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space))
    before = worker_groups()
    out, _ = sweep(tmp_path, ray_cluster).communicate(timeout=900)
    assert "best val/mean_recall_at_1" in out and "{'lr': 0.01}" in out, out[-3000:]
    with open(tmp_path / "ray" / "sweeps" / "tiny" / "results.csv") as table:
        assert {float(row["lr"]): row["status"] for row in csv.DictReader(table)} == {1e-2: "done", 1e-9: "stopped"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = json.loads((tmp_path / "ray" / "sweeps" / "tiny" / "sweep.json").read_text())["parent_run_id"]
    runs = {float(r.data.params["lr"]): r.info.status for r in children(client, parent)}
    assert runs == {1e-2: "FINISHED", 1e-9: "KILLED"}
    assert worker_groups() <= before, out[-3000:]  # the sweep freed the stopped trial's workers


def test_leaked_worker_placement_groups_are_removed_and_trial_groups_kept(ray_cluster):
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    remove_leaked_placement_groups(min_age_s=0)  # what earlier tests leaked is theirs to report, not this test's
    workers = placement_group([{"CPU": 1}])
    driver = placement_group([{"TRAIN_DRIVER_RESOURCE": 0.01}])
    ray.get([workers.ready(), driver.ready()], timeout=180)
    assert remove_leaked_placement_groups(min_age_s=3600) == 0  # too young to be a leak
    assert remove_leaked_placement_groups(min_age_s=0) == 1
    assert placement_group_table(workers)["state"] == "REMOVED" and placement_group_table(driver)["state"] == "CREATED"
    remove_placement_group(driver)


class TrainController:
    """Stands in for a stopped trial's Ray Train controller (the sweep finds them by class name):
    it restarts its workers, creating a placement group, while Tune is killing it."""

    def restart_workers(self):
        import ray
        from ray.util.placement_group import placement_group

        time.sleep(3)
        ray.get(placement_group([{"CPU": 1}]).ready())


def test_sweep_end_waits_for_a_stopped_trials_controller_then_frees_every_group_of_the_job(ray_cluster):
    import threading

    import ray
    from ray.util.placement_group import placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote(num_cpus=1)
    class Worker:
        def ready(self):
            return True

    used = placement_group([{"CPU": 1}])
    worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(used)).remote()
    ray.get(worker.ready.remote(), timeout=180)
    controller = ray.remote(num_cpus=0)(TrainController).remote()
    ray.get(controller.__ray_ready__.remote(), timeout=180)
    controller.restart_workers.remote()
    threading.Timer(6.0, ray.kill, [controller]).start()  # Tune kills a stopped trial asynchronously
    assert free_job_worker_groups(timeout_s=60) == 2  # the used group and the one created after the call
    workers = [g for g in placement_group_table().values() if any("CPU" in b for b in g["bundles"].values())]
    assert workers and all(g["state"] == "REMOVED" for g in workers)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(worker.ready.remote(), timeout=180)  # removing its group killed the worker


def test_a_controller_counts_as_live_until_its_process_has_exited(ray_cluster):
    # Ray can mark a stopped trial's controller DEAD while its process still drains its run (see
    # placement._live_controllers); so a controller counts until no live worker has its pid
    import ray
    from ray.util.state import list_actors, list_workers

    from orchestrator.placement import _live_controllers

    def settled(job):  # no controller of this job left, within a minute (earlier tests' may still exit)
        deadline = time.monotonic() + 60
        while (live := _live_controllers(job)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return live == 0

    job = ray.get_runtime_context().get_job_id()
    assert settled(job)
    controller = ray.remote(num_cpus=0)(TrainController).remote()
    ray.get(controller.__ray_ready__.remote(), timeout=180)
    assert _live_controllers(job) == 1
    actor_id = controller._actor_id.hex()
    ray.kill(controller)
    assert settled(job)
    (state,) = list_actors(filters=[("actor_id", "=", actor_id)], address=ray_cluster)
    running = list_workers(address=ray_cluster, filters=[("pid", "=", state.pid)], raise_on_missing_output=False)
    assert state.state == "DEAD" and not any(w.is_alive and w.node_id == state.node_id for w in running)


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_compiles(path):
    from sotalign.data.registry import load_dataset

    space = load_search_space(path)
    assert space.parameters and space.num_samples >= 1 and path.read_text().startswith("# Question:")
    pool = len(load_dataset("openmoji").splits["pool"])
    study = optuna.create_study(sampler=space.build_sampler(), direction="maximize")
    for _ in range(min(space.num_samples, 12)):  # every grid cell; a dozen TPE trials
        trial = study.ask()
        space.define_by_run(trial)
        experiment, _ = split_tree(space.experiment_tree(trial.params))
        with contextlib.suppress(RuntimeError):  # a finished grid stops its study
            study.tell(trial, 1.0)
        assert all(name in trial.params for name in [p.name for p in space.parameters if not p.when])
        data = experiment.data
        if data.dataset == "iconify-emoji":  # its own validation split; the budget within the emoji pool
            assert data.val_split == "validation" and data.n_pairs + (data.n_unpaired or 0) <= ICONIFY_EMOJI_POOL, (
                trial.params
            )
        elif data.dataset == "openmoji":
            assert data.n_pairs + data.n_val + (data.n_unpaired or 0) <= pool, trial.params
        else:  # smoke.yaml: no store, no encoders
            assert data.dataset == "synthetic", trial.params


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(sampler={"type": "anneal"}), "tiny.yaml:22: sampler.type: sampler type must be one of"),
        (
            lambda s: s["parameters"]["eps_student"].update(low=0.5),
            "tiny.yaml:41: parameters.eps_student.high: high must be greater than low",
        ),
        (
            lambda s: s["parameters"]["teacher"].update(type="choice"),
            "tiny.yaml:27: parameters.teacher.type: type must be one of",
        ),
        (
            lambda s: s["parameters"].update(epsilon={"type": "float", "low": 0.1, "high": 1}),
            "tiny.yaml:43: parameters.epsilon: does not fit the experiment: unknown AlignConfig key(s): epsilon",
        ),
        (lambda s: s.update(schedular={}), "tiny.yaml:43: schedular: unknown key"),
        (lambda s: s["base"]["align"].update(teacher="ridge"), "tiny.yaml:2: base: unknown teacher 'ridge'"),
        (
            lambda s: s["parameters"]["teacher_reg"].update(when={"teachr": "cca"}),
            "'teachr' is neither a parameter nor a key",
        ),
        (
            lambda s: s["parameters"]["teacher_reg"].update(when={"teacher": "CCA"}),
            "teacher takes ['cca', 'procrustes'], not all of ['CCA']",
        ),
        (
            lambda s: s["parameters"]["eps_student"].update(high=-1.0, low=-2.0, log=False),
            "eps_student: does not fit the experiment: eps_student must be > 0",
        ),
    ],
)
def test_bad_search_spaces_name_the_line_and_key(tmp_path, edit, message):
    space = json.loads(json.dumps(SPACE))
    edit(space)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    with pytest.raises(SearchSpaceError) as error:
        load_search_space(tmp_path / "tiny.yaml")
    assert message in str(error.value)


def grid_cells(space):
    """Every cell of a grid search space, as parameter dicts."""
    study = optuna.create_study(sampler=space.build_sampler(), direction="maximize")
    cells = []
    for _ in range(space.num_samples):
        trial = study.ask()
        space.define_by_run(trial)
        cells.append(dict(trial.params))
        with contextlib.suppress(RuntimeError):  # a finished grid stops its study
            study.tell(trial, 1.0)
    return cells


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "search_spaces").glob("paper_*.yaml"), *(ROOT / "search_spaces").glob("iconify_*.yaml")]),
    ids=lambda p: p.name,
)
def test_every_paper_experiment_runs_at_a_tiny_budget(path):
    """Each distinct cell (seed 0) trains on a tiny synthetic budget with the cell's method and settings
    (the Iconify spaces' data path: tests/sotalign/test_iconify.py, on a tiny store)."""
    from sotalign.data.synthetic import make_synthetic
    from sotalign.evaluation import retrieval
    from sotalign.two_stage import fit

    space = load_search_space(path)
    assert space.sampler["type"] == "grid" and "seed" in [p.name for p in space.parameters]
    bench = make_synthetic(n_pairs=24, n_unpaired=120, n_val=20, n_test=40, image_dim=12, text_dim=10, seed=0)
    cells = [c for c in grid_cells(space) if c["seed"] == 0]
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == len(cells) == space.num_samples // 3
    for cell in cells:
        experiment, options = split_tree(space.experiment_tree(cell))
        assert options.workers == 0 and experiment.name == space.name  # in-process trials, own MLflow experiment
        config = experiment.config().replace(
            steps=min(experiment.config().steps, 3), head_dim=16, batch_unpaired=16, teacher_steps=3, eval_every=3
        )
        model = fit(
            bench.paired_images,
            bench.paired_texts,
            bench.unpaired_images,
            bench.unpaired_texts,
            config,
            validation=(bench.val_images, bench.val_texts),
        )
        assert (
            0
            <= retrieval(model.encode_image(bench.test_images), model.encode_text(bench.test_texts))["mean_recall_at_1"]
            <= 100
        )


def test_in_process_trials_report_to_tune_and_mlflow(ray_cluster, tmp_path):
    space = {
        **SPACE,
        "name": "inproc",
        "num_samples": 2,
        "sampler": {"type": "grid"},
        "base": {  # unnamed: the runs log to an MLflow experiment of the sweep's name
            **{k: v for k, v in SPACE["base"].items() if k != "name"},
            "run": {"workers": 0, "storage_path": str(tmp_path / "ray")},
        },
        "parameters": {"method": {"type": "categorical", "choices": ["sail", "nnclr"]}},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space))
    out, _ = sweep(tmp_path, ray_cluster).communicate(timeout=900)
    assert "best val/mean_recall_at_1" in out, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = json.loads((tmp_path / "ray" / "sweeps" / "inproc" / "sweep.json").read_text())["parent_run_id"]
    runs = children(client, parent)
    assert sorted(r.data.params["method"] for r in runs) == ["nnclr", "sail"]
    inproc = client.get_experiment_by_name("inproc").experiment_id
    assert {r.info.experiment_id for r in runs} == {inproc} and client.get_run(parent).info.experiment_id == inproc
    assert all(r.info.status == "FINISHED" and "mean_recall_at_1" in r.data.metrics for r in runs)
    nnclr = next(r for r in runs if r.data.params["method"] == "nnclr")
    assert {"nnclr/text", "ssw/total"} <= set(nnclr.data.metrics)
