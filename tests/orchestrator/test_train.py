"""`sotalign train` on a real local Ray cluster: 2 data-parallel Train workers equal one process, and
rank 0 leaves a complete MLflow run (tags, params, per-step metrics, artifacts). A run that loses a
worker and resumes from its checkpoint: tests/orchestrator/test_multinode.py (a whole node lost)."""

import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.experiment_file import load_experiment_file

TREE = {  # adamw: Lion's sign update would turn float round-off into different steps
    "name": "synthetic",
    "method": "sotalign",
    "seed": 3,
    "data": {"dataset": "synthetic", "n_pairs": 48, "n_unpaired": 600, "n_val": 80},
    "align": {
        "head_dim": 24,
        "steps": 60,
        "batch_unpaired": 97,
        "optimizer": "adamw",
        "lr": 3e-3,
        "eps_teacher": 0.05,
        "alpha": 10.0,
        "log_every": 10,
        "eval_every": 20,
    },
    "run": {"workers": 2, "checkpoint_every": 30},  # not a multiple of eval_every: must not change the chosen model
}


def test_two_workers_equal_one_process_and_log_a_complete_mlflow_run(
    ray_cluster, tmp_path, capsys, uninterrupted, same_model
):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump({**TREE, "run": {**TREE["run"], "workers": 1, "storage_path": str(tmp_path / "ray")}})
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["train", str(path), "--workers", "2", "--tracking-uri", uri]) == 0  # the flag beats run.workers
    run_id = capsys.readouterr().out.split("MLflow run ")[1].split()[0]
    experiment, _ = load_experiment_file(path)
    model, expected = uninterrupted(experiment)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["resumed_from_step"] == 0
    for key in ("mean_recall_at_1", "t2i_recall_at_5", "i2t_recall_at_10"):
        assert run.data.metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    same_model(Path(client.download_artifacts(run_id, "", str(tmp_path / "artifacts"))) / "model", model)
    tags = run.data.tags
    assert tags["method"] == "sotalign" and tags["teacher"] == "cca" and tags["dataset"] == "synthetic"
    assert tags["n_pairs"] == "48" and tags["n_unpaired"] == "600" and " + " in tags["encoder_pair"]
    assert (
        run.data.params["alpha"] == "10.0"
        and run.data.params["data.n_pairs"] == "48"
        and run.data.params["seed"] == "3"
    )
    assert [m.step for m in client.get_metric_history(run_id, "loss/klot")] == [10, 20, 30, 40, 50, 60]
    assert "sinkhorn/teacher_marginal_err" in run.data.metrics and "val/mean_recall_at_1" in run.data.metrics
    files = {a.path for folder in ("", "model", "plots") for a in client.list_artifacts(run_id, folder)}
    assert {
        "config.yaml",
        "eval.json",
        "model/model.safetensors",
        "model/teacher.safetensors",
        "plots/training.png",
    } <= files
    config = yaml.safe_load((tmp_path / "artifacts" / "config.yaml").read_text())
    assert config["align"]["batch_unpaired"] == 97 and config["data"]["dataset"] == "synthetic"


def test_experiment_files_and_bad_input(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(TREE))
    experiment, options = load_experiment_file(
        path, {"alpha": 3, "data.n_pairs": 20, "run.workers": 1, "method": "sail"}
    )
    assert experiment.align.alpha == 3 and experiment.data.n_pairs == 20 and options.workers == 1
    assert experiment.config().divergence == "none" and os.path.isabs(options.storage_path)
    for text, message in [
        ("data: {dataset: synthetic, n_pairs: [1,\n", "exp.yaml:2: malformed YAML"),
        ("align: {epsilon: 0.1}\n", "unknown AlignConfig key(s): epsilon"),
        ("data: {dataset: coco}\n", "holds no coco:pool (embed it first with `sotalign embed"),
        ("method: ridge\n", "unknown method 'ridge'"),
        ("run: {workers: -1}\n", "run.workers must be >= 0, got -1"),
        ("runs: {workers: 2}\n", "unknown experiment key(s): runs"),
    ]:
        path.write_text(text)
        assert main(["train", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
        assert message in capsys.readouterr().err
    path.write_text(yaml.safe_dump({**TREE, "run": {"storage_path": str(tmp_path / "ray")}}))
    assert main(["train", str(path), "--set", "steps=abc"]) == 2
    assert "steps must be an int, got 'abc'" in capsys.readouterr().err
    assert main(["train", str(path), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "is unreachable" in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()  # nothing started, nothing written
    assert main(["train", str(path), "--set", "data=3"]) == 2
    assert "data must be a mapping of keys, got 3" in capsys.readouterr().err


def test_bad_input_found_by_stage_1_is_one_error_before_ray_train_or_mlflow_start(tmp_path, capsys):
    """Stage 1's dimension check (on rank 0, it once was: a Train failure retried max_failures times,
    then a traceback and a FAILED run) runs on the driver: exit 2, one line, no run, no Ray results."""
    path, db = tmp_path / "exp.yaml", tmp_path / "m.db"
    align = {
        **TREE["align"],
        "teacher_dim": 100,
        "head_init": "random",
    }  # from the teacher, the config itself refuses it
    tree = {**TREE, "align": align, "run": {**TREE["run"], "workers": 1}}
    path.write_text(yaml.safe_dump({**tree, "run": {**tree["run"], "storage_path": str(tmp_path / "ray")}}))
    for changes in ([], ["--set", "teacher=contrastive"]):  # the closed form is fitted there, the trained one checked
        assert main(["train", str(path), "--tracking-uri", f"sqlite:///{db}", *changes]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: teacher dim 100 must be between 1 and min(d_image=96, d_text=64, n_pairs=48) = 48"]
    client = MlflowClient(f"sqlite:///{db}")
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not (tmp_path / "ray").exists()
