"""The ``sotalign`` command: demo end to end (tiny), overrides, exit code 2 on bad input and 1 (with the
traceback) on a bug."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.experiment_file import split_tree
from orchestrator.overrides import parse_assignments, with_changes

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_are_typed_and_validated():
    changes = parse_assignments(
        [
            "eps_teacher=0.05",
            "teacher=procrustes",
            "teacher_dim=null",
            "select_best=false",
            "data.n_pairs=40",
            "method=sail",
        ]
    )
    experiment, _ = split_tree(with_changes({}, changes))
    config = experiment.config()
    assert config.eps_teacher == 0.05 and config.teacher == "procrustes" and config.teacher_dim is None
    assert config.select_best is False and experiment.data.n_pairs == 40 and config.divergence == "none"
    with pytest.raises(ValueError, match="key=value"):
        parse_assignments(["alpha"])
    with pytest.raises(ValueError, match="unknown AlignConfig key.*epsilon"):
        split_tree(with_changes({}, {"epsilon": 0.1}))
    with pytest.raises(ValueError, match="unknown teacher 'pca'"):
        split_tree(with_changes({}, {"teacher": "pca"}))
    with pytest.raises(ValueError, match="unknown key 'data.n_pairs.x'"):
        with_changes({}, {"data.n_pairs.x": 1})


def test_synthetic_demo_writes_results(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--synthetic",
            "--seeds",
            "2",
            "--set",
            "steps=20",
            "--set",
            "head_dim=16",
            "--set",
            "batch_unpaired=64",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| sotalign |" in out and "| sail |" in out and "| teacher |" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["head_dim"] == 16
    assert {(r["method"], r["seed"]) for r in results["rows"]} == {
        (m, s) for m in ("teacher", "sail", "sotalign") for s in (0, 1)
    }


def test_bundled_demo_runs_a_sweep_and_prints_the_comparison(ray_cluster, tmp_path, capsys):
    # demo.yaml's shape at test size: one encoder pair at 32 px, SAIL vs SOTAlign, 5 steps
    space = {
        "name": "demo",
        "base": {
            "file": str(ROOT / "search_spaces/experiments/openmoji.yaml"),
            "data": {
                "store": str(tmp_path / "store"),
                "n_pairs": 40,
                "image_encoder": "packaged:efficientnet-lite0?image_size=32",
            },
            "align": {"steps": 5, "head_dim": 16, "eval_every": 5},
            "run": {"storage_path": str(tmp_path / "ray")},
        },
        "max_concurrent": 2,
        "sampler": {"type": "grid"},
        "parameters": {"method": {"type": "categorical", "choices": ["sail", "sotalign"]}},
    }
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(space))
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        main(["demo", "--space", str(tmp_path / "demo.yaml"), "--tracking-uri", db, "--out", str(tmp_path / "out")])
        == 0
    )
    out = capsys.readouterr().out
    assert "| sail |" in out and "| sotalign |" in out and "digits top-1" in out
    # the closing hints run as printed from here: the command as this shell finds it, with the store
    ui, compare = (shlex.split(line, comments=True) for line in out.split("runs are in MLflow")[1].splitlines()[1:3])
    assert shutil.which(ui[0]) and ui[1:] == ["ui", "--tracking-uri", db]
    assert compare[0] == ui[0] and compare[1] == "compare" and compare[-2:] == ["--tracking-uri", db]
    assert (tmp_path / "out" / "results.md").read_text().count("\n") == 4
    from mlflow.tracking import MlflowClient

    client = MlflowClient(db)
    [experiment] = [e for e in client.search_experiments() if e.name.startswith("demo-")]  # the demo's own
    assert compare[compare.index("--experiment") + 1] == experiment.name
    runs = client.search_runs([experiment.experiment_id], "tags.method = 'sotalign'")
    assert len(runs) == 1 and runs[0].data.tags["encoder_pair"].startswith("packaged:efficientnet-lite0")
    assert runs[0].data.tags["n_pairs"] == "40" and 0 <= runs[0].data.metrics["digits_top1"] <= 100
    assert runs[0].data.tags["gallery"] == "plots/gallery.png"  # logged by the Train worker's rank 0
    assert "gallery.png: SOTAlign's retrieval gallery" in out and (tmp_path / "out" / "gallery.png").is_file()


def test_bad_demo_input_exits_2(tmp_path, capsys):
    assert main(["demo", "--synthetic", "--set", "steps=abc", "--out", str(tmp_path)]) == 2
    assert "steps must be an int, got 'abc'" in capsys.readouterr().err
    assert main(["demo", "--space", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--set", "teacher=pca", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown teacher 'pca'; expected one of 'procrustes', 'cca', 'contrastive'"
    ]
    assert not (tmp_path / "results.json").exists()


def test_python_m_sotalign_is_the_command_and_says_its_version(tmp_path):
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "sotalign", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"sotalign {version('sotalign')}"
    proc = subprocess.run([sys.executable, "-m", "sotalign", "train"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr


def test_an_internal_error_exits_1_with_its_traceback(tmp_path):
    """A ValueError raised inside training is a bug, not bad input: no one-line ``error:``, exit 1, the
    traceback kept (only ``InputError`` means the user gave something wrong)."""
    code = (
        "import sys\n"
        "import sotalign.stage2\n"
        "def broken(*args, **kwargs):\n"
        "    raise ValueError('a deliberate bug inside training')\n"
        "sotalign.stage2.build_optimizer = broken\n"
        "from orchestrator.cli import main\n"
        f"sys.exit(main(['demo', '--synthetic', '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback (most recent call last):" in lines and "in train_heads" in proc.stderr
    assert lines[-1] == "ValueError: a deliberate bug inside training"
    assert not any(line.startswith("error:") for line in lines)


def test_embed_reports_bad_rows_or_skips_them(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text("image,caption\na.png,a red square\nmissing.png,a ghost\n")
    args = [
        "embed",
        "--encoder",
        "packaged:efficientnet-lite0?image_size=32",
        "--dataset",
        str(tmp_path / "pairs.csv"),
        "--out",
        str(tmp_path / "store"),
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    assert "1 bad rows" in capsys.readouterr().err and not (tmp_path / "store").exists()
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad rows: row 1: missing.png (missing file)" in out and "pairs/all image: 1 x 1280" in out
