"""`sotalign sweep` on the session's Ray cluster: Optuna (persistent study) + Tune + MLflow parent
and child runs; a sweep whose driver is killed after its first trial resumes without re-running
it. Also: every shipped search space compiles, and bad files are named with their line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.experiment_file import split_tree
from orchestrator.search_space import SearchSpaceError, load_search_space

ROOT = Path(__file__).resolve().parents[2]
SPACE = {
    "name": "tiny",
    "base": {"name": "synthetic", "data": {"dataset": "synthetic", "n_pairs": 32, "n_unpaired": 300, "n_val": 60},
             "align": {"head_dim": 16, "steps": 40, "batch_unpaired": 64, "lr": 1e-3, "log_every": 20, "eval_every": 20},
             "run": {"workers": 1, "checkpoint_every": 20}},
    "metric": "val/mean_recall_at_1",
    "num_samples": 3,
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
    "parameters": {"teacher": {"type": "categorical", "choices": ["cca", "procrustes"]},
                   "teacher_reg": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": {"teacher": "cca"}},
                   "eps_student": {"type": "float", "low": 0.03, "high": 0.2, "log": True}},
}


def sweep(tmp_path, ray_address, *extra):
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    command = [sys.executable, "-m", "orchestrator.cli", "sweep", str(tmp_path / "tiny.yaml"),
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def children(client, parent):
    exp = client.get_experiment_by_name("synthetic")
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")


def test_sweep_killed_after_one_trial_resumes(ray_cluster, tmp_path):
    space = {**SPACE, "base": {**SPACE["base"], "run": {**SPACE["base"]["run"], "storage_path": str(tmp_path / "ray")}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space))
    folder = tmp_path / "ray" / "sweeps" / "tiny"
    study = lambda: optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")  # noqa: E731
    first = sweep(tmp_path, ray_cluster)
    deadline = time.monotonic() + 300
    # kill the driver once one trial is complete in the study and in Tune's saved experiment state
    while True:
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.poll() is not None else "timeout"
        done = (folder / "optuna.db").exists() and sum(t.state.is_finished() for t in study().trials) >= 1
        states = list((folder / "tune").glob("experiment_state*.json"))
        if done and states and '\\"TERMINATED\\"' in states[0].read_text():
            break
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    parent = json.loads((folder / "sweep.json").read_text())["parent_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    finished = [r for r in children(client, parent) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and len(study().trials) < 4
    kept = finished[0]

    second = sweep(tmp_path, ray_cluster, "--resume")
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out[-3000:]
    trials = study().trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 3 and len(trials) == 3
    assert all(("teacher_reg" in t.params) == (t.params["teacher"] == "cca") for t in trials)  # conditional
    runs = children(client, parent)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    again = next(r for r in runs if r.data.tags["trial_id"] == kept.data.tags["trial_id"])
    assert again.info.run_id == kept.info.run_id and again.info.end_time == kept.info.end_time  # not re-run
    assert all(r.data.tags["encoder_pair"] and r.data.tags["sweep"] == "tiny" and "mean_recall_at_1" in r.data.metrics for r in runs)
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"config.yaml", "eval.json", "model"}
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and "best/val/mean_recall_at_1" in top.data.metrics
    assert {a.path for a in client.list_artifacts(parent)} == {"results.md", "results.csv", "best_config.yaml", "metric_vs_params.png"}
    table = (folder / "results.md").read_text()
    assert table.count("| done |") == 3 and "teacher_reg" in table
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    split_tree(best)  # the best config is a runnable experiment
    assert "best" in out and "results:" in out


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_compiles(path):
    space = load_search_space(path)
    assert space.parameters and space.num_samples >= 1 and path.read_text().startswith("# Question:")
    study = optuna.create_study(sampler=space.build_sampler(), direction="maximize")
    for _ in range(3):  # the define-by-run space samples, and every trial is a valid experiment
        trial = study.ask()
        space.define_by_run(trial)
        experiment, _ = split_tree(space.experiment_tree(trial.params))
        study.tell(trial, 1.0)
        assert all(name in trial.params for name in [p.name for p in space.parameters if not p.when])
    assert experiment.data.dataset == "openmoji"


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(sampler={"type": "anneal"}), "tiny.yaml:22: sampler.type: sampler type must be one of"),
    (lambda s: s["parameters"]["eps_student"].update(low=0.5), "tiny.yaml:41: parameters.eps_student.high: high must be greater than low"),
    (lambda s: s["parameters"]["teacher"].update(type="choice"), "tiny.yaml:27: parameters.teacher.type: type must be one of"),
    (lambda s: s["parameters"].update(epsilon={"type": "float", "low": 0.1, "high": 1}), "tiny.yaml:43: parameters.epsilon: does not fit the experiment: unknown AlignConfig field(s): epsilon"),
    (lambda s: s.update(schedular={}), "tiny.yaml:43: schedular: unknown key"),
    (lambda s: s["base"]["align"].update(teacher="ridge"), "tiny.yaml:2: base: unknown teacher 'ridge'"),
])
def test_bad_search_spaces_name_the_line_and_key(tmp_path, edit, message):
    space = json.loads(json.dumps(SPACE))
    edit(space)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    with pytest.raises(SearchSpaceError) as error:
        load_search_space(tmp_path / "tiny.yaml")
    assert message in str(error.value)
