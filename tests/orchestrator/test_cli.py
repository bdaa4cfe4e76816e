"""The ``sotalign`` command: demo end to end (tiny), overrides, and exit code 2 on bad input."""

import json
import subprocess
import sys

import pytest

from orchestrator.cli import main
from orchestrator.overrides import apply_overrides
from sotalign import AlignConfig


def test_overrides_are_typed_and_validated():
    config = apply_overrides(AlignConfig(), ["eps_teacher=0.05", "teacher=procrustes", "teacher_dim=null", "select_best=false"])
    assert config.eps_teacher == 0.05 and config.teacher == "procrustes" and config.teacher_dim is None
    assert config.select_best is False
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(AlignConfig(), ["alpha"])
    with pytest.raises(ValueError, match="unknown AlignConfig field.*epsilon"):
        apply_overrides(AlignConfig(), ["epsilon=0.1"])
    with pytest.raises(ValueError, match="unknown teacher 'pca'"):
        apply_overrides(AlignConfig(), ["teacher=pca"])


def test_synthetic_demo_writes_results(tmp_path, capsys):
    code = main(["demo", "--synthetic", "--seeds", "2", "--set", "steps=20", "--set", "head_dim=16",
                 "--set", "batch_unpaired=64", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| sotalign |" in out and "| sail |" in out and "| teacher |" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["head_dim"] == 16
    assert {(r["method"], r["seed"]) for r in results["rows"]} == {(m, s) for m in ("teacher", "sail", "sotalign") for s in (0, 1)}


def test_bundled_demo_embeds_trains_and_plots(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["demo", "--n-pairs", "20", "40", "--seeds", "1", "--set", "steps=5", "--set", "head_dim=16",
                 "--image-encoder", "packaged:efficientnet-lite0?image_size=32", "--store", str(tmp_path / "store"),
                 "--tracking-uri", db, "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| 40 | sotalign |" in out and "digits top-1" in out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 3 and all(0 <= r["digits_top1"] <= 100 for r in rows)
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert (tmp_path / "store" / "openmoji" / "test" / "image").is_dir()
    # every trained model is an MLflow run with the conventions' tags, metrics and artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(db)
    runs = client.search_runs([client.get_experiment_by_name("openmoji").experiment_id], "tags.method = 'sotalign'")
    assert len(runs) == 2 and {r.data.tags["n_pairs"] for r in runs} == {"20", "40"}
    run = runs[0]
    assert run.data.tags["encoder_pair"].startswith("packaged:efficientnet-lite0") and run.data.tags["teacher"] == "cca"
    assert "mean_recall_at_1" in run.data.metrics and "loss/klot" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "loss/total")) == 1  # steps=5, logged at the end
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"config.yaml", "eval.json", "model/model.safetensors", "model/teacher.safetensors"} <= artifacts


def test_set_values_are_type_checked_and_synthetic_refuses_bundled_flags(tmp_path, capsys):
    assert main(["demo", "--synthetic", "--set", "steps=abc", "--out", str(tmp_path)]) == 2
    assert "steps must be an int, got 'abc'" in capsys.readouterr().err
    assert main(["demo", "--synthetic", "--n-pairs", "50", "--out", str(tmp_path)]) == 2
    assert "--n-pairs do not apply" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--set", "teacher=pca", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown teacher 'pca'; expected one of 'procrustes', 'cca', 'contrastive'"]
    assert not (tmp_path / "results.json").exists()


def test_embed_reports_bad_rows_or_skips_them(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text("image,caption\na.png,a red square\nmissing.png,a ghost\n")
    args = ["embed", "--encoder", "packaged:efficientnet-lite0?image_size=32", "--dataset", str(tmp_path / "pairs.csv"),
            "--out", str(tmp_path / "store"), "--device", "cpu"]
    assert main(args) == 2
    assert "1 bad rows" in capsys.readouterr().err and not (tmp_path / "store").exists()
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad rows: row 1: missing.png (missing file)" in out and "pairs/all image: 1 x 1280" in out
