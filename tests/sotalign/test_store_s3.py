"""The embedding store on object storage (a real S3 server, moto, on loopback): the same tables as on a
local disk, resumable extraction, readers that see complete tables only, and clear refusals."""

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from PIL import Image

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.extract import embed_dataset, read_table, shard_path, stored_table
from sotalign.data.registry import load_dataset
from sotalign.data.store import read_embeddings, write_embeddings
from sotalign.encoders import load_encoder
from sotalign.experiments.experiment import Experiment, load_data
from tests.sotalign.test_extract import CountingEncoder

IMAGE = "packaged:efficientnet-lite0?image_size=32"


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> str:
    """An image-caption table of one's own: 16 small images, two captions each."""
    root = tmp_path_factory.mktemp("pairs")
    rows = ["image,caption"]
    for i in range(16):
        Image.new("RGB", (16, 16), (15 * i, 255 - 15 * i, (40 * i) % 256)).save(root / f"p{i}.png")
        rows += [f"p{i}.png,a red photo of the cat", f"p{i}.png,the {'green blue'.split()[i % 2]} car"]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return str(root / "pairs.csv")


@pytest.fixture(scope="module")
def text_encoder(tiny_bert_dir):
    return load_encoder(f"hf:{tiny_bert_dir}", device="cpu")


def test_a_table_on_s3_reads_back_as_the_local_one(s3, tmp_path):
    args = (
        [f"img-{i}" for i in range(5)],
        torch.randn(5, 7),
        {"encoder": "timm:vit_tiny", "dataset": "toy", "split": "train"},
        {"image_id": [0, 0, 1, 2, 2], "caption": ["a", "b", "c", "d", "e"]},
    )
    remote = read_embeddings(write_embeddings(fs.join(s3.url, "t", "x.parquet"), *args))
    local = read_embeddings(write_embeddings(tmp_path / "x.parquet", *args))
    assert remote.ids == local.ids and torch.equal(remote.embeddings, local.embeddings)
    assert remote.metadata == local.metadata and remote.columns.keys() == local.columns.keys()
    assert all(np.array_equal(remote.columns[k], local.columns[k]) for k in local.columns)
    with pytest.raises(InputError, match=f"no embedding table at {s3.url}/t/missing.parquet"):
        read_embeddings(fs.join(s3.url, "t", "missing.parquet"))


def test_extraction_to_s3_resumes_and_readers_see_complete_tables_only(s3, tmp_path, pairs_csv, text_encoder):
    dataset, store = load_dataset(pairs_csv), fs.join(s3.url, "store")
    counting = CountingEncoder(text_encoder)
    folder = embed_dataset(dataset, "all", counting, store, shard_size=8, batch_size=3, progress=False)
    assert folder.startswith(f"{s3.url}/store/pairs/all/text/") and counting.rows == 32
    table = read_table(folder)
    local = read_table(embed_dataset(dataset, "all", text_encoder, tmp_path, shard_size=8, progress=False))
    assert table.ids == local.ids and torch.allclose(table.embeddings, local.embeddings, atol=1e-6)
    assert np.array_equal(table.columns["image_id"], local.columns["image_id"])
    # an interrupted run: some shards written, no manifest yet
    filesystem, _ = fs.resolve(folder)
    filesystem.delete_file(fs.resolve(shard_path(folder, 2))[1])
    filesystem.delete_file(fs.resolve(fs.join(folder, "_COMPLETE.json"))[1])
    with pytest.raises(InputError, match=f"no complete embedding table at {folder}"):
        read_table(folder)
    assert stored_table(dataset, "all", "text", text_encoder.id, store) is None
    counting.rows = 0
    embed_dataset(dataset, "all", counting, store, shard_size=8, batch_size=3, progress=False)
    assert counting.rows == 8  # only the missing shard
    again = read_table(folder)
    assert again.ids == table.ids and torch.equal(again.embeddings, table.embeddings)
    assert stored_table(dataset, "all", "text", text_encoder.id, store) == folder


def test_unreachable_store_and_missing_bucket_are_named(s3, monkeypatch):
    fs.check_reachable(fs.join(s3.url, "store"))
    with pytest.raises(InputError, match=f"no bucket 'no-such-bucket' at {s3.endpoint} for s3://no-such-bucket/x"):
        fs.check_reachable("s3://no-such-bucket/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    fs._remote.cache_clear()
    with pytest.raises(InputError, match=f"cannot reach {s3.url}/store: .*Could not connect"):
        fs.check_reachable(fs.join(s3.url, "store"))
    with pytest.raises(InputError, match=f"cannot reach {s3.url}/store/t"):
        read_table(fs.join(s3.url, "store", "t"))


def test_an_experiment_reads_the_same_data_from_s3(s3, tmp_path, pairs_csv, tiny_bert_dir):
    text = f"hf:{tiny_bert_dir}"
    encoders = [load_encoder(IMAGE, device="cpu"), load_encoder(text, device="cpu")]
    for encoder in encoders:
        embed_dataset(load_dataset(pairs_csv), "all", encoder, tmp_path / "store", progress=False)
    filesystem, bucket = fs.resolve(s3.url)
    pafs.copy_files(str(tmp_path / "store"), f"{bucket}/store", destination_filesystem=filesystem)
    ids = {IMAGE: encoders[0].id, text: encoders[1].id}

    def data(store: str):
        spec = {"dataset": "pairs", "store": store, "image_encoder": IMAGE, "text_encoder": text}
        spec |= {"pool_split": "all", "test_split": None, "n_test": 4, "n_pairs": 6, "n_val": 3}
        return load_data(Experiment.from_dict({"name": "s3", "data": spec}), ids)

    local, remote = data(str(tmp_path / "store")), data(fs.join(s3.url, "store"))
    for name in ("paired_images", "paired_texts", "unpaired_images", "unpaired_texts"):
        assert torch.equal(getattr(local, name), getattr(remote, name)), name
    assert torch.equal(local.test.captions, remote.test.captions)
    assert torch.equal(local.validation.images, remote.validation.images)
