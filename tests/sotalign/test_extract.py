"""Embedding extraction: bundled datasets, sharded resumable tables, refusals, aligned views."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sotalign.data.datasets import ImageTextDataset, fixed_split
from sotalign.data.digits import load_digits
from sotalign.data.extract import embed_dataset, embed_rows, is_complete, read_table, shard_path
from sotalign.data.openmoji import SKIN_TONES, load_openmoji
from sotalign.data.views import classification_view, retrieval_view
from sotalign.encoders import load_encoder


class CountingEncoder:
    """Wraps a real encoder and counts rows embedded (to see which shards a resume recomputes)."""

    def __init__(self, encoder):
        self.inner, self.rows = encoder, 0
        self.modality, self.dim, self.id = encoder.modality, encoder.dim, encoder.id

    def embed(self, batch):
        self.rows += len(batch)
        return self.inner.embed(batch)


def toy_dataset(n=20):
    colours = [(int(255 * i / n), 80, 255 - int(255 * i / n)) for i in range(n)]
    ids = [f"img{i:02d}" for i in range(n)]
    captions, owner = [], []
    for i in range(n):
        for k in range(1 + i % 2):  # one or two captions per image
            captions.append(["a red car", "the green dog", "a blue cat"][(i + k) % 3])
            owner.append(i)
    return ImageTextDataset(
        "toy",
        ids,
        captions,
        np.asarray(owner),
        fixed_split(ids, 6, "toy"),
        lambda i: Image.new("RGB", (40, 40), colours[i]),
    )


@pytest.fixture(scope="module")
def text_encoder(tiny_bert_dir):
    return load_encoder(f"hf:{tiny_bert_dir}", device="cpu")


@pytest.fixture(scope="module")
def image_encoder():
    return load_encoder("packaged:efficientnet-lite0?image_size=32", device="cpu")


def test_openmoji_bundle():
    d = load_openmoji()
    assert len(d.image_ids) > 1800 and len(d.captions) > len(d.image_ids)
    assert not any(SKIN_TONES & set(h.split("-")) for h in d.image_ids)
    assert len(d.splits["test"]) == 400 and not set(d.splits["test"]) & set(d.splits["pool"])
    assert np.array_equal(d.splits["test"], load_openmoji().splits["test"])  # fixed split
    japan = d.image_ids.index("1F1EF-1F1F5")
    assert d.captions[int(np.flatnonzero(d.caption_image == japan)[0])] == "flag: Japan"
    image = np.asarray(d.load_image(japan))
    assert image.shape == (128, 128, 3) and (image < 200).any()


def test_digits_bundle():
    d = load_digits()
    assert len(d.image_ids) == 1797 and set(d.labels) == set(range(10))
    assert len(d.prompts()) == 10 * len(d.templates) and d.prompts()[len(d.templates)].count("one") == 1
    ink = np.asarray(d.load_image(0).convert("L"))
    assert ink.shape == (64, 64) and int(ink.min()) < 60 and int(ink.max()) == 255  # dark ink on white


def test_tables_are_sharded_resumable_and_match(tmp_path, image_encoder, text_encoder):
    d = toy_dataset()
    counting = CountingEncoder(text_encoder)
    folder = Path(embed_dataset(d, "pool", counting, tmp_path, shard_size=4, batch_size=3, progress=False))
    total = counting.rows
    table = read_table(folder)
    assert table.metadata["shards"] == len(list(folder.glob("part-*.parquet"))) > 2
    assert len(table.ids) == total == len(d.split_indices("pool")[1])
    # a lost shard and manifest: only that shard is recomputed, the table comes back identical
    Path(shard_path(folder, 1)).unlink()
    (folder / "_COMPLETE.json").unlink()
    counting.rows = 0
    embed_dataset(d, "pool", counting, tmp_path, shard_size=4, batch_size=3, progress=False)
    assert counting.rows == 4
    again = read_table(folder)
    assert again.ids == table.ids and torch.equal(again.embeddings, table.embeddings)
    # a complete table is not recomputed at all
    counting.rows = 0
    embed_dataset(d, "pool", counting, tmp_path, shard_size=4, progress=False)
    assert counting.rows == 0
    # the retrieval view joins images and captions
    images = read_table(embed_dataset(d, "pool", image_encoder, tmp_path, progress=False))
    view = retrieval_view(images, again)
    owners = [i.split("#")[0] for i in again.ids]
    assert [images.ids[j] for j in view.caption_image] == owners
    first_rows = [again.ids.index(f"{i}#0") for i in images.ids]
    assert torch.equal(view.first_captions, again.embeddings[first_rows])


def test_refuses_to_mix_encoders_and_incomplete_tables(tmp_path, text_encoder, tiny_bert_dir):
    d = toy_dataset()
    folder = Path(embed_dataset(d, "test", text_encoder, tmp_path, progress=False))
    other = load_encoder(f"hf:{tiny_bert_dir}?pooling=cls", device="cpu")
    ids = read_table(folder).ids
    with pytest.raises(ValueError, match="refusing to mix encoders"):
        embed_rows(other, lambda i: "a cat", ids, folder, metadata={}, keys=["a cat"] * len(ids), progress=False)
    # same ids, other content (an edited caption, or another dataset of the same name): refused, not reused
    edited = toy_dataset()
    edited.captions[0] = "a different caption"
    with pytest.raises(ValueError, match="holds other content"):
        embed_dataset(edited, "test" if 0 in edited.splits["test"] else "pool", text_encoder, tmp_path, progress=False)
    (folder / "_COMPLETE.json").unlink()
    assert not is_complete(folder)
    with pytest.raises(ValueError, match="no complete embedding table"):
        read_table(folder)


def test_caption_ids_count_per_image_wherever_the_rows_are(tmp_path, text_encoder):
    d = toy_dataset(4)
    d.captions, d.caption_image = ["x", "y", "z", "w"], np.asarray([0, 1, 0, 2])  # image 0's captions not adjacent
    d.splits = {"all": np.arange(4)}
    table = read_table(embed_dataset(d, "all", text_encoder, tmp_path, progress=False))
    assert table.ids == ["toy/img00#0", "toy/img01#0", "toy/img00#1", "toy/img02#0"]


def test_classification_view(tmp_path, image_encoder, text_encoder):
    d = load_digits()
    d.splits = {"test": d.splits["test"][:12]}
    images = read_table(embed_dataset(d, "test", image_encoder, tmp_path, progress=False))
    prompts = read_table(embed_dataset(d, "test", text_encoder, tmp_path, progress=False))
    view = classification_view(images, prompts)
    assert view.class_prompts.shape == (10, len(d.templates), text_encoder.dim)
    # the prompt of class 3, template 2 (padding in a batch changes float round-off, not the prompt)
    assert torch.allclose(view.class_prompts[3, 2], text_encoder.embed([d.templates[2].format("three")])[0], atol=1e-5)
    assert np.array_equal(view.labels, d.labels[d.splits["test"]])
