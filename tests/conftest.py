"""Shared fixtures: tiny real encoders built from configs and saved locally (nothing downloads),
a small real Iconify set packed with npm once per test session, with a store of a few dozen
of its concepts (used by tests/sotalign/test_iconify.py and tests/orchestrator/test_iconify_cli.py),
and a real S3-compatible server (moto) on loopback with a fresh bucket per test."""

import dataclasses
import shutil
import uuid
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from sotalign.data.extract import embed_dataset
from sotalign.data.iconify import build_dataset, concept_split, load_set, pack_set
from sotalign.data.iconify.dataset import collect_images
from sotalign.encoders import DEFAULT_TEXT_ENCODER, load_encoder

SMALL_SET = "emojione"  # the smallest pinned set with aliases, skin tones and flags (1834 icons)
TINY_STORE_IMAGE_ENCODER = "packaged:efficientnet-lite0?image_size=32"  # seconds on a CPU; text: the real MiniLM

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "red",
    "car",
    "the",
    "green",
    "blue",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-wide BERT and its word-piece tokenizer in a local folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def npm_cache(tmp_path_factory):
    """A cache folder holding the small set, packed with npm once for the whole run."""
    if shutil.which("npm") is None:
        pytest.skip("npm (Node.js) is not installed: the Iconify tests pack one icon set with it")
    cache = tmp_path_factory.mktemp("npm")
    pack_set(SMALL_SET, cache)
    return cache


@pytest.fixture(scope="session")
def small_set(npm_cache):
    """The small set (``SMALL_SET``), read from the packed tarball."""
    return load_set(SMALL_SET, npm_cache)


@pytest.fixture(scope="session")
def tiny_store(small_set, tmp_path_factory):
    """``tiny``: 24 pool, 3 validation and 4 test concepts of the small set, each in two styles (the set
    and a copy), split by concept as the real datasets are; ``tiny-mono``: the same concepts in a third
    style, alone (its pool a source of unpaired images with concepts). Embedded at 32 px + MiniLM:
    ``.root`` (the store), ``.ids`` (encoder spec -> id), ``.dataset`` (``tiny``), ``.image_encoder`` (its spec)."""
    images, _ = collect_images([small_set])
    chosen = {
        c
        for split, n in (("pool", 24), ("validation", 3), ("test", 4))
        for c in sorted({i.concept for i in images if concept_split(i.concept) == split})[:n]
    }
    subset = dataclasses.replace(
        small_set, icons={i.name: small_set.icons[i.name] for i in images if i.concept in chosen}
    )
    tiny = build_dataset("tiny", [subset, dataclasses.replace(subset, prefix="copy")])
    mono = build_dataset("tiny-mono", [dataclasses.replace(subset, prefix="mono")])
    assert (
        set(tiny.splits) == {"pool", "validation", "test"}
        and len(set(tiny.image_concept[tiny.splits["validation"]])) == 3
    )
    root = tmp_path_factory.mktemp("iconify-store")
    encoders = {
        TINY_STORE_IMAGE_ENCODER: load_encoder(TINY_STORE_IMAGE_ENCODER, device="cpu"),
        DEFAULT_TEXT_ENCODER: load_encoder(DEFAULT_TEXT_ENCODER, device="cpu"),
    }
    for dataset, splits in ((tiny, tiny.splits), (mono, ["pool"])):
        for split in splits:
            for encoder in encoders.values():
                embed_dataset(dataset, split, encoder, root, progress=False)
    return SimpleNamespace(
        root=root,
        ids={spec: e.id for spec, e in encoders.items()},
        dataset=tiny,
        image_encoder=TINY_STORE_IMAGE_ENCODER,
    )


@pytest.fixture(scope="session")
def moto_endpoint():
    """``http://127.0.0.1:PORT`` of a moto S3 server run as its own process for the session, stopped at the end."""
    from benchmarks.store_read import start_moto

    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto server, with the AWS environment pointing at it for this test.

    ``.url``: ``s3://BUCKET``; ``.bucket``; ``.endpoint``; ``.env``: the variables, for subprocesses."""
    import boto3

    from sotalign.data import fs

    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):  # nothing of the user's AWS setup
        monkeypatch.delenv(key, raising=False)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    fs._remote.cache_clear()  # clients are cached per bucket with the endpoint they were made with
    yield SimpleNamespace(url=f"s3://{bucket}", bucket=bucket, endpoint=moto_endpoint, env=env)
    fs._remote.cache_clear()
