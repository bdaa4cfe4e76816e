"""`sotalign embed` and `sotalign train` on Iconify data: the npm cache in the store, one clear
error for a bad set or a missing npm, and the shipped experiment file on a tiny real store
(fixtures in tests/conftest.py)."""

import shutil
from pathlib import Path

import pytest

from orchestrator import tracking
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_embed_cli_uses_the_store_cache_and_reruns_nothing(
    npm_cache, small_set, tmp_path, tiny_bert_dir, capsys, monkeypatch
):
    store = tmp_path / "store"
    (store / "_npm").mkdir(parents=True)
    shutil.copy(next(npm_cache.glob(f"{small_set.prefix}@*.tgz")), store / "_npm")
    monkeypatch.setenv("PATH", "")  # cached in the store: no npm needed
    args = [
        "embed",
        "--dataset",
        f"iconify:{small_set.prefix}",
        "--split",
        "validation",
        "--out",
        str(store),
        "--encoder",
        f"hf:{tiny_bert_dir}",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert f"iconify-{small_set.prefix}/validation text:" in first
    folder = next(store.glob(f"iconify-{small_set.prefix}/validation/text/*"))
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    monkeypatch.setattr(
        "orchestrator.embed.load_encoder", lambda *a, **k: pytest.fail("a complete table's encoder was loaded")
    )
    assert main(args) == 0 and capsys.readouterr().out == first
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_bad_set_names_and_missing_npm_are_one_clear_error(tmp_path, capsys, monkeypatch):
    def error(dataset):
        assert main(["embed", "--dataset", dataset, "--out", str(tmp_path / "store")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    assert "bad Iconify icon set name 'Bad_Set'" in error("iconify:Bad_Set")
    if shutil.which("npm") is not None:
        assert "unknown Iconify icon set 'no-such-set-xyz'" in error("iconify:no-such-set-xyz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    assert "npm" in error("iconify:twemoji") and "'twemoji'" in error("iconify:twemoji")


def test_train_the_shipped_iconify_experiment_on_a_tiny_store(tiny_store, tmp_path, monkeypatch):
    """`sotalign train search_spaces/experiments/iconify.yaml`, on the tiny store: the run logs the plan
    diagnostic and the SSW distance before training, the validation and the test metrics after."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    changes = {
        "data.dataset": "tiny",
        "data.store": str(tiny_store.root),
        "data.image_encoder": tiny_store.image_encoder,
        "data.n_pairs": 8,
        "steps": 4,
        "eval_every": 2,
        "log_every": 2,
        "head_dim": 8,
    }
    args = ["train", str(ROOT / "search_spaces/experiments/iconify.yaml"), "--tracking-uri", uri]
    assert main(args + [item for key, value in changes.items() for item in ("--set", f"{key}={value}")]) == 0
    client = tracking.client(uri)
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])  # the data's family
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "tiny"
    assert {
        "diagnostic/plan_mass_on_partners",
        "diagnostic/plan_argmax_on_partners",
        "diagnostic/chance_mass_on_partners",
        "ssw/total",
        "val/mean_recall_at_1",
        "mean_recall_at_1",
    } <= set(run.data.metrics)
