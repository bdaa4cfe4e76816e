"""User-data formats: WebDataset shards, Hugging Face datasets, COCO JSON, image folders, texts;
each built here from a few tiny images, read into dataset descriptions and embedded."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sotalign.checks import InputError
from sotalign.data.datasets import ClassificationDataset, ImageDataset, ImageTextDataset, TextDataset
from sotalign.data.extract import dataset_rows, embed_dataset, read_table, shard_path
from sotalign.data.formats import detect_format, load_user_dataset
from sotalign.data.items import open_items
from sotalign.data.registry import load_dataset
from sotalign.encoders import load_encoder

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
IMAGE_SPEC = "packaged:efficientnet-lite0?image_size=32"


def png(colour: str, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, fmt)
    return buffer.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def pairs_shards(folder, with_text=True, corrupt=None):
    """Two shards of 3 samples each (keys 000000.. as img2dataset numbers them), with .json beside."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(2):
        members = []
        for k in range(3):
            key = f"{shard * 3 + k:06d}"
            data = b"not an image" if key == corrupt else png(COLOURS[shard * 3 + k], "JPEG")
            members.append((f"{key}.jpg", data))
            if with_text:
                members.append((f"{key}.txt", f"a {COLOURS[shard * 3 + k]} square".encode()))
            members.append((f"{key}.json", b"{}"))
        write_tar(folder / f"{shard:05d}.tar", members)
    return str(folder / "{00000..00001}.tar")


@pytest.fixture(scope="module")
def image_encoder():
    return load_encoder(IMAGE_SPEC, device="cpu")


@pytest.fixture(scope="module")
def text_encoder(tiny_bert_dir):
    return load_encoder(f"hf:{tiny_bert_dir}", device="cpu")


# WebDataset


def test_webdataset_pairs_over_a_brace_pattern(tmp_path):
    pattern = pairs_shards(tmp_path / "shards")
    assert detect_format(pattern) == "webdataset"
    d = load_dataset(pattern)
    assert isinstance(d, ImageTextDataset) and d.name == "shards"
    assert d.image_ids == [f"{k:06d}" for k in range(6)]
    assert d.captions[4] == "a purple square" and d.caption_image.tolist() == list(range(6))
    assert list(d.splits) == ["all"]
    assert np.asarray(d.load_image(1))[0, 0].tolist()[2] > 200  # blue, read by seeking into shard 0
    assert np.asarray(d.load_image(3))[0, 0].tolist()[0] > 200  # yellow, in shard 1
    again = load_dataset(pattern)
    assert dataset_rows(again, "all", "text")[2] == dataset_rows(d, "all", "text")[2]
    assert dataset_rows(d, "all", "text")[2][0] == "shards/000000#0"
    # re-read from the recorded source, as a gallery does
    source = dict(d.source)
    assert load_dataset(source.pop("name"), **source).image_ids == d.image_ids


def test_webdataset_key_collisions_take_the_shard_name(tmp_path):
    folder = tmp_path / "wds"
    folder.mkdir()
    for shard in range(2):
        write_tar(folder / f"part{shard}.tar", [("x.png", png(COLOURS[shard])), ("x.txt", b"a square")])
    d = load_user_dataset(str(folder))  # a folder of .tar files
    assert d.image_ids == ["part0/x", "part1/x"] and d.name == "wds"
    assert len(d.duplicates) == 0


def test_webdataset_without_texts_is_image_only(tmp_path, image_encoder):
    pattern = pairs_shards(tmp_path / "unpaired", with_text=False)
    d = load_dataset(pattern, dataset_name="pool-images")
    assert isinstance(d, ImageDataset) and d.modalities == ("image",) and d.name == "pool-images"
    with pytest.raises(InputError, match="no texts"):
        dataset_rows(d, "all", "text")
    table = read_table(embed_dataset(d, "all", image_encoder, tmp_path / "store", progress=False))
    assert table.ids == [f"pool-images/{k:06d}" for k in range(6)] and table.embeddings.shape[0] == 6


def test_a_file_that_is_not_a_tar_is_named(tmp_path):
    pairs_shards(tmp_path / "shards")
    (tmp_path / "shards" / "00001.tar").write_bytes(b"<html>not found</html>" * 40)
    with pytest.raises(InputError, match=r"00001\.tar is not a tar file"):
        load_dataset(str(tmp_path / "shards" / "{00000..00001}.tar"))
    with pytest.raises(InputError, match=r"1 of the 3 shards .* missing, first: .*00002\.tar"):
        load_dataset(str(tmp_path / "shards" / "{00000..00002}.tar"))


def test_a_corrupt_image_names_shard_and_key_or_is_skipped(tmp_path):
    pattern = pairs_shards(tmp_path / "shards", corrupt="000004")
    with pytest.raises(InputError, match=r"1 bad rows in .*: .*shards/00001\.tar: 000004 \(unreadable image\)"):
        load_dataset(pattern)
    d = load_dataset(pattern, skip_bad=True)
    assert "000004" not in d.image_ids and len(d.image_ids) == 5 and len(d.skipped) == 1
    assert d.captions[4] == "a orange square" and d.caption_image.tolist() == list(range(5))


def test_an_empty_caption_is_a_bad_row(tmp_path):
    write_tar(tmp_path / "one.tar", [("a.png", png("red")), ("a.txt", b"  "), ("b.png", png("blue")), ("b.txt", b"b")])
    with pytest.raises(InputError, match=r"one\.tar: a \(empty caption\)"):
        load_dataset(str(tmp_path / "one.tar"))
    assert load_dataset(str(tmp_path / "one.tar"), skip_bad=True).image_ids == ["b"]


# Hugging Face datasets


def hf_dataset(n=4, captions=True):
    import datasets

    columns = {"image": [{"bytes": png(COLOURS[i]), "path": None} for i in range(n)]}
    features = {"image": datasets.Image()}
    if captions:
        columns["text"] = [f"a {COLOURS[i]} square" for i in range(n)]
        features["text"] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_hf_save_to_disk_and_its_parquet(tmp_path):
    import datasets

    ds = hf_dataset()
    ds.save_to_disk(str(tmp_path / "saved"))
    assert detect_format(str(tmp_path / "saved")) == "hf"
    d = load_dataset(str(tmp_path / "saved"), caption_column="text")
    assert isinstance(d, ImageTextDataset) and d.image_ids == ["0", "1", "2", "3"] and d.name == "saved"
    assert d.captions[2] == "a green square" and np.asarray(d.load_image(1))[0, 0].tolist() == [0, 0, 255]
    # a DatasetDict: its splits become splits
    datasets.DatasetDict({"train": ds.select(range(3)), "test": ds.select([3])}).save_to_disk(str(tmp_path / "dd"))
    dd = load_dataset(str(tmp_path / "dd"), caption_column="text")
    assert {k: v.tolist() for k, v in dd.splits.items()} == {"train": [0, 1, 2], "test": [3]}
    assert dd.image_ids[3] == "test/0"
    # its Parquet file: pairs; without the caption column: image-only; the text alone: text-only
    ds.to_parquet(str(tmp_path / "pairs.parquet"))
    assert detect_format(str(tmp_path / "pairs.parquet"), caption_column="text") == "hf"
    p = load_dataset(str(tmp_path / "pairs.parquet"), caption_column="text")
    assert p.captions == d.captions and p.image_ids == d.image_ids and p.name == "pairs"
    images = load_dataset(str(tmp_path / "pairs.parquet"))  # no column "caption": image-only
    assert isinstance(images, ImageDataset) and len(images.image_ids) == 4
    texts = load_dataset(str(tmp_path / "saved"), format="hf", image_column="none", caption_column="text")
    assert isinstance(texts, TextDataset) and texts.texts[0] == "a red square"
    source = dict(p.source)
    assert load_dataset(source.pop("name"), **source).captions == p.captions


def test_hf_bad_image_named_and_duplicates_reported(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [png("red"), b"broken", png("red")], "caption": ["a", "b", "c"]},
        features=datasets.Features({"image": datasets.Value("binary"), "caption": datasets.Value("string")}),
    )
    ds.to_parquet(str(tmp_path / "raw.parquet"))
    with pytest.raises(InputError, match=r"all row 1 \(unreadable image\)"):
        load_dataset(str(tmp_path / "raw.parquet"))
    d = load_dataset(str(tmp_path / "raw.parquet"), skip_bad=True)
    assert d.image_ids == ["0", "2"] and d.duplicates == [("2", "0")]


# COCO


def coco(tmp_path, annotations=None):
    (tmp_path / "images").mkdir()
    images = []
    for i, colour in enumerate(COLOURS[:3]):
        (tmp_path / "images" / f"{colour}.jpg").write_bytes(png(colour, "JPEG"))
        images.append({"id": 10 + i, "file_name": f"{colour}.jpg"})
    annotations = annotations or [
        {"id": 100 + 2 * i + k, "image_id": 10 + i, "caption": f"{c} picture {k}"}
        for i, c in enumerate(COLOURS[:3])
        for k in range(2)
    ]
    path = tmp_path / "captions_val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_two_captions_per_image(tmp_path, text_encoder):
    path = coco(tmp_path)
    assert detect_format(str(path)) == "coco"
    d = load_dataset(str(path), image_root=str(tmp_path / "images"))
    assert d.image_ids == ["red.jpg", "blue.jpg", "green.jpg"] and d.name == "captions_val"
    assert d.caption_image.tolist() == [0, 0, 1, 1, 2, 2] and d.captions[3] == "blue picture 1"
    table = read_table(embed_dataset(d, "all", text_encoder, tmp_path / "store", progress=False))
    assert table.ids[:2] == ["captions_val/red.jpg#0", "captions_val/red.jpg#1"]
    items = open_items("captions_val", tmp_path / "store")  # re-read from the recorded source
    assert items.caption("captions_val/blue.jpg#1") == "blue picture 1"
    assert np.asarray(items.image("captions_val/green.jpg"))[0, 0, 1] > 100
    # the default image root is the JSON's folder: the images are not there
    with pytest.raises(InputError, match=r"3 bad rows .*red\.jpg \(missing file\)"):
        load_dataset(str(path))


def test_coco_annotation_of_an_unknown_image_is_an_error(tmp_path):
    path = coco(
        tmp_path, annotations=[{"id": 1, "image_id": 10, "caption": "x"}, {"id": 2, "image_id": 99, "caption": "y"}]
    )
    with pytest.raises(
        InputError, match=r"1 annotations name an image id not in 'images', first: annotation 2 -> image 99"
    ):
        load_dataset(str(path), image_root=str(tmp_path / "images"), skip_bad=True)


# image folders and texts


def test_plain_image_folder_is_image_only_and_duplicates_reported(tmp_path, image_encoder):
    root = tmp_path / "photos"
    (root / "2023" / "june").mkdir(parents=True)
    (root / "a.png").write_bytes(png("red"))
    (root / "2023" / "b.png").write_bytes(png("blue"))
    (root / "2023" / "june" / "c.jpg").write_bytes(png("green", "JPEG"))
    (root / "2023" / "june" / "copy.png").write_bytes(png("red"))
    (root / "notes.txt").write_text("not an image")
    assert detect_format(str(root)) == "images"
    d = load_dataset(str(root))
    assert isinstance(d, ImageDataset) and d.name == "photos"
    assert d.image_ids == ["2023/b.png", "2023/june/c.jpg", "2023/june/copy.png", "a.png"]
    assert d.duplicates == [("a.png", "2023/june/copy.png")]
    store = tmp_path / "store"
    table = read_table(embed_dataset(d, "all", image_encoder, store, progress=False))
    assert table.ids[0] == "photos/2023/b.png" and table.embeddings.shape == (4, image_encoder.dim)
    # the class layout (no image at the top, every image one folder down, two folders) stays classes
    classes = tmp_path / "classes"
    for cls in ("cat", "dog"):
        (classes / cls).mkdir(parents=True)
        (classes / cls / "0.png").write_bytes(png("red" if cls == "cat" else "blue"))
    assert detect_format(str(classes)) == "classes"
    assert isinstance(load_dataset(str(classes)), ClassificationDataset)
    forced = load_dataset(str(classes), format="images")  # an explicit format wins
    assert isinstance(forced, ImageDataset) and forced.image_ids == ["cat/0.png", "dog/0.png"]


@pytest.mark.parametrize("suffix", ["txt", "jsonl", "csv"])
def test_texts_are_text_only(tmp_path, suffix, text_encoder):
    texts = ["a red car", "the green dog", "a blue cat"]
    path = tmp_path / f"notes.{suffix}"
    if suffix == "txt":
        path.write_text("a red car\n\n  the green dog  \na blue cat\n")
    elif suffix == "jsonl":
        path.write_text("\n".join(json.dumps({"caption": t}) for t in texts) + "\n")
    else:
        path.write_text("caption\n" + "\n".join(texts) + "\n")
    assert detect_format(str(path)) == "texts"
    d = load_dataset(str(path))
    assert isinstance(d, TextDataset) and d.texts == texts and d.modalities == ("text",)
    expected = ["line1", "line3", "line4"] if suffix == "txt" else ["row0", "row1", "row2"]
    assert d.text_ids == expected and load_dataset(str(path)).text_ids == expected
    table = read_table(embed_dataset(d, "all", text_encoder, tmp_path / "store", progress=False))
    assert table.ids == [f"notes/{i}" for i in expected]
    assert torch.allclose(table.embeddings[1], text_encoder.embed(["the green dog"])[0], atol=1e-5)


def test_an_empty_text_in_a_table_is_a_bad_row(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"caption": "a cat"}\n{"caption": ""}\n')
    with pytest.raises(InputError, match=r"row 1 \(empty caption\)"):
        load_dataset(str(path))
    assert load_dataset(str(path), skip_bad=True).text_ids == ["row0"]


def test_an_interrupted_webdataset_extraction_resumes(tmp_path, image_encoder):
    d = load_dataset(pairs_shards(tmp_path / "shards"))
    store = tmp_path / "store"
    folder = Path(embed_dataset(d, "all", image_encoder, store, shard_size=2, progress=False))
    table = read_table(folder)
    Path(shard_path(folder, 1)).unlink()
    (folder / "_COMPLETE.json").unlink()
    calls = []
    inner = d.load_image
    d.load_image = lambda i: calls.append(i) or inner(i)
    again = read_table(embed_dataset(d, "all", image_encoder, store, shard_size=2, progress=False))
    assert calls == [2, 3]  # only the lost shard's rows were re-read
    assert again.ids == table.ids and torch.allclose(again.embeddings, table.embeddings, atol=1e-6)


def test_webdataset_on_object_storage(tmp_path, s3):
    """The same shards in a bucket of a real S3 endpoint (moto's server, its own process): read through
    sotalign.data.fs."""
    from sotalign.data import fs

    pairs_shards(tmp_path / "shards")
    for shard in ("00000.tar", "00001.tar"):
        fs.write_bytes(f"{s3.url}/data/shards/{shard}", (tmp_path / "shards" / shard).read_bytes())
    d = load_dataset(f"{s3.url}/data/shards/{{00000..00001}}.tar")
    local = load_dataset(str(tmp_path / "shards" / "{00000..00001}.tar"))
    assert d.name == "shards" and d.image_ids == local.image_ids and d.captions == local.captions
    assert np.array_equal(np.asarray(d.load_image(4)), np.asarray(local.load_image(4)))
    assert d.source["name"] == f"{s3.url}/data/shards/{{00000..00001}}.tar"
