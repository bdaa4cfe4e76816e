"""The CLI with object storage (a real S3 server, moto, on loopback): `sotalign embed --out s3://...`,
one readable error line for an unreachable store or a missing bucket before any work, and the MLflow
server keeping its artifacts in a bucket."""

import os
import signal

import boto3
import pytest
import yaml
from PIL import Image

from orchestrator.cli import main
from sotalign.data import fs
from sotalign.data.extract import is_complete

IMAGE = "packaged:efficientnet-lite0?image_size=32"


@pytest.fixture
def pairs_csv(tmp_path) -> str:
    rows = ["image,caption"]
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 80, 255 - 40 * i)).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,a red photo of the cat")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "pairs.csv")


def embed(csv: str, out: str) -> list[str]:
    return ["embed", "--dataset", csv, "--encoder", IMAGE, "--out", out, "--device", "cpu"]


def test_embed_writes_the_store_to_s3(s3, pairs_csv, capsys):
    store = fs.join(s3.url, "store")
    assert main(embed(pairs_csv, store)) == 0
    out = capsys.readouterr().out
    assert f"pairs/all image: 6 x 1280 -> {store}/pairs/all/image/" in out
    folder = out.rsplit("-> ", 1)[1].strip()
    assert is_complete(folder) and len(fs.list_files(folder)) == 2  # one shard + the manifest


def test_unreachable_store_or_missing_bucket_exits_2_with_one_line(s3, pairs_csv, tmp_path, monkeypatch, capsys):
    assert main(embed(pairs_csv, "s3://no-such-bucket/store")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no bucket 'no-such-bucket' at {s3.endpoint} for s3://no-such-bucket/store: create it, or fix the location"
    ]
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"name": "s3", "data": {"store": "s3://no-such-bucket/store"}}))
    assert main(["train", str(config), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--workers", "0"]) == 2
    assert "no bucket 'no-such-bucket'" in capsys.readouterr().err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    fs._remote.cache_clear()
    assert main(embed(pairs_csv, fs.join(s3.url, "store"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith(f"error: cannot reach {s3.url}/store: ") and "Could not connect" in err[0]
    )


def test_the_mlflow_server_keeps_artifacts_in_a_bucket(s3, tmp_path, free_port, serving_ui):
    from mlflow import MlflowClient

    port = free_port()
    args = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)]
    args += ["--artifacts-destination", fs.join(s3.url, "mlflow")]
    proc, _ = serving_ui(args, tmp_path, {**os.environ, **s3.env, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")  # not mlflow.set_tracking_uri: no global state left behind
        run = client.create_run(client.create_experiment("s3-artifacts"))
        client.log_text(run.info.run_id, "{}", "eval.json")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    objects = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").list_objects_v2(Bucket=s3.bucket)
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith(f"{run.info.run_id}/artifacts/eval.json") for k in keys), keys


def test_ray_train_checkpoints_reach_an_s3_storage_path(s3, tmp_path):
    """Ray Train's own storage layer (what ``RunConfig(storage_path=...)`` builds on every worker) finds the
    custom endpoint through the AWS environment alone: s3 locations pass through unchanged."""
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.storage import StorageContext

    from orchestrator.experiment_file import with_absolute_paths

    tree = with_absolute_paths({"data": {"store": f"{s3.url}/store"}, "run": {"storage_path": f"{s3.url}/ray"}})
    storage_path = tree["run"]["storage_path"]
    assert tree["data"]["store"] == f"{s3.url}/store" and storage_path == f"{s3.url}/ray"
    (tmp_path / "state.pt").write_bytes(b"heads")
    storage = StorageContext(storage_path=storage_path, experiment_dir_name="run-1")
    persisted = storage.persist_current_checkpoint(Checkpoint.from_directory(str(tmp_path)), "checkpoint_000000")
    assert persisted.path == f"{s3.bucket}/ray/run-1/checkpoint_000000"
    assert fs.read_bytes(f"s3://{persisted.path}/state.pt") == b"heads"
