"""User datasets: image-caption tables in three formats, labelled folders, bad-row handling."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sotalign.data.extract import embed_dataset, read_table
from sotalign.data.generic import load_image_folder, load_image_text_table
from sotalign.data.registry import load_dataset
from sotalign.encoders import load_encoder

ROWS = [("a.png", "a red square"), ("b.png", "a blue square"), ("a.png", "something red"), ("c.png", "green")]


@pytest.fixture
def images(tmp_path):
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (16, 16), colour).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def write(fmt, folder, rows, extra=None):
    cols = {"image": [r[0] for r in rows], "caption": [r[1] for r in rows], **(extra or {})}
    path = folder / f"pairs.{fmt}"
    if fmt == "csv":
        lines = [",".join(cols)] + [",".join(str(cols[k][i]) for k in cols) for i in range(len(rows))]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps({k: cols[k][i] for k in cols}) for i in range(len(rows))) + "\n")
    else:
        pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_tables_group_several_captions_per_image(images, fmt):
    d = load_image_text_table(write(fmt, images, ROWS))
    assert d.image_ids == ["a.png", "b.png", "c.png"]
    assert d.captions == ["a red square", "a blue square", "something red", "green"]
    assert d.caption_image.tolist() == [0, 1, 0, 2]
    assert list(d.splits) == ["all"] and np.asarray(d.load_image(1)).tolist()[0][0] == [0, 0, 255]


def test_the_image_check_shows_a_bar_and_finds_copies(images, capsys):
    """Each distinct image is checked once behind a bar; two files with the same bytes are reported."""
    (images / "d.png").write_bytes((images / "a.png").read_bytes())
    d = load_image_text_table(write("csv", images, [*ROWS, ("d.png", "a copy")]))
    err = capsys.readouterr().err
    assert "checking images of" in err and "4/4" in err, err
    assert d.duplicates == [("d.png", "a.png")]
    load_image_folder(_class_folder(images))
    assert "2/2" in capsys.readouterr().err


def _class_folder(images):
    for label, name in (("red", "a.png"), ("blue", "b.png")):
        (images / "classes" / label).mkdir(parents=True)
        (images / "classes" / label / name).write_bytes((images / name).read_bytes())
    return images / "classes"


def test_split_column_and_custom_columns(images):
    path = write("jsonl", images, ROWS, {"split": ["train", "test", "train", "train"]})
    d = load_dataset(str(path))
    assert {k: v.tolist() for k, v in d.splits.items()} == {"test": [1], "train": [0, 2]}
    with pytest.raises(ValueError, match="no column 'img'"):
        load_image_text_table(path, image_column="img")
    leak = write("csv", images, ROWS, {"split": ["train", "test", "test", "train"]})
    with pytest.raises(ValueError, match=r"1 rows put an image in two splits .*row 2: a.png \(train vs test\)"):
        load_image_text_table(leak)


def test_bad_rows_are_listed_or_skipped(images):
    rows = ROWS + [("missing.png", "ghost"), ("broken.png", "broken"), ("c.png", "  ")]
    path = write("csv", images, rows)
    with pytest.raises(
        ValueError,
        match=r"3 bad rows in .*row 4: missing.png \(missing file\); row 5: broken.png \(unreadable image\); row 6: c.png \(empty caption\)",
    ):
        load_image_text_table(path)
    d = load_image_text_table(path, skip_bad=True)
    assert len(d.captions) == 4 and len(d.skipped) == 3


def test_image_folder_and_embedding_it(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    for cls, colour in (("red_thing", "red"), ("blue_thing", "blue")):
        (root / cls).mkdir()
        for k in range(2):
            Image.new("RGB", (16, 16), colour).save(root / cls / f"{k}.png")
    (root / "red_thing" / "bad.jpg").write_bytes(b"oops")
    with pytest.raises(ValueError, match=r"1 bad rows .*red_thing/bad.jpg \(unreadable image\)"):
        load_image_folder(root)
    d = load_image_folder(root, skip_bad=True)
    assert d.class_names == ["blue thing", "red thing"] and d.labels.tolist() == [0, 0, 1, 1]
    store = tmp_path_factory.mktemp("store")
    table = read_table(
        embed_dataset(
            d, "all", load_encoder("packaged:efficientnet-lite0?image_size=32", device="cpu"), store, progress=False
        )
    )
    assert table.embeddings.shape == (4, 1280) and table.columns["label"].tolist() == [0, 0, 1, 1]
