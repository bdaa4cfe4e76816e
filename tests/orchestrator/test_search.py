"""`sotalign search` over a real store (a user's table embedded by `sotalign embed` with the packaged
encoders) and a planted model that maps every image and its caption onto one axis: the query is
embedded by the model's own encoder, so a stored caption finds its image first and an image file
its caption. A store of another encoder is refused with exit 2; the contact sheet has one cell per
result."""

import json

import pytest
import torch
from PIL import Image, ImageDraw

from orchestrator.cli import main
from sotalign.config import AlignConfig
from sotalign.data.extract import read_table, table_dir
from sotalign.encoders import encoder_id
from sotalign.model import AlignedModel
from sotalign.preprocess import Preprocessing
from sotalign.teachers import Teacher

IMAGE = "packaged:efficientnet-lite0?image_size=32"  # the packaged weights at a test size
TEXT = "packaged:all-minilm-l6-v2"
SHAPES = {  # file -> (caption, colour, shape)
    "sun.png": ("a yellow sun", "gold", "ellipse"),
    "leaf.png": ("a green leaf", "green", "polygon"),
    "brick.png": ("a red brick", "firebrick", "rectangle"),
    "sea.png": ("the blue sea", "navy", "rectangle-wide"),
    "plum.png": ("a purple plum", "purple", "ellipse-small"),
    "cloud.png": ("a white cloud on grey", "lightgrey", "ellipse-wide"),
}


def draw(path, colour, shape):
    image = Image.new("RGB", (64, 64), "white" if colour != "lightgrey" else "dimgrey")
    pen = ImageDraw.Draw(image)
    box = {"rectangle-wide": [2, 20, 62, 44], "ellipse-small": [20, 20, 44, 44], "ellipse-wide": [4, 16, 60, 48]}
    if shape == "polygon":
        pen.polygon([(32, 4), (60, 32), (32, 60), (4, 32)], fill=colour)
    else:
        (pen.ellipse if shape.startswith("ellipse") else pen.rectangle)(box.get(shape, [8, 8, 56, 56]), fill=colour)
    image.save(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    for file, (_, colour, shape) in SHAPES.items():
        draw(folder / file, colour, shape)
    rows = "".join(f"{file},{caption}\n" for file, (caption, _, _) in SHAPES.items())
    (folder / "shapes.csv").write_text("image,caption\n" + rows)
    for spec in (IMAGE, TEXT):
        args = ["embed", "--encoder", spec, "--dataset", str(folder / "shapes.csv"), "--out", str(folder / "store")]
        assert main([*args, "--device", "cpu"]) == 0
    return folder


def planted_model(store, image_spec=IMAGE):
    """Linear heads that send stored image i and its caption i to the i-th axis (pseudo-inverses of the
    normalised embeddings: exact, since 6 rows < either dimension)."""
    images = read_table(table_dir(store / "store", "shapes", "all", "image", encoder_id(IMAGE))).embeddings
    texts = read_table(table_dir(store / "store", "shapes", "all", "text", encoder_id(TEXT))).embeddings
    project = lambda x: torch.linalg.pinv(torch.nn.functional.normalize(x, dim=1).double()).float()  # noqa: E731
    teacher = Teacher(
        "procrustes",
        project(images),
        project(texts),
        Preprocessing(images.shape[1]),
        Preprocessing(texts.shape[1]),
    )
    model = AlignedModel.from_teacher(teacher, AlignConfig())
    model.provenance = {
        "image_encoder": image_spec,
        "text_encoder": TEXT,
        "dataset": "shapes",
        "store": str(store / "store"),
        "split": "all",
    }
    return model.save(store / f"model-{image_spec.rsplit('=', 1)[1]}")


def result_rows(out):
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]


def test_a_stored_caption_finds_its_image_first_and_an_image_its_caption(store, capsys):
    model = planted_model(store)
    for file, (caption, _, _) in SHAPES.items():
        assert main(["search", "--model", str(model), "--text", caption, "--k", "3"]) == 0
        rows = result_rows(capsys.readouterr().out)
        assert rows[0][2] == f"shapes/{file}" and rows[0][3] == caption  # id, and the image's caption
        assert float(rows[0][1]) == pytest.approx(1.0, abs=1e-4) and len(rows) == 3
    assert main(["search", "--model", str(model), "--image", str(store / "leaf.png"), "--k", "2"]) == 0
    rows = result_rows(capsys.readouterr().out)
    assert rows[0][2] == "shapes/leaf.png#0" and rows[0][3] == "a green leaf" and len(rows) == 2
    assert main(["search", "--model", str(model), "--text", "a red brick", "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)  # the hits alone on stdout
    assert [(h["rank"], h["id"], h["caption"]) for h in hits][0] == (1, "shapes/brick.png", "a red brick")
    assert len(hits) == 2 and hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[1]["score"] < 1


def test_the_contact_sheet_has_one_cell_per_result(store, capsys):
    from orchestrator.gallery import CELL, HEADER_H

    model = planted_model(store)
    out = store / "sheet.png"
    assert main(["search", "--model", str(model), "--text", "a red brick", "--k", "4", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    sheet = Image.open(out).convert("RGB")
    assert sheet.size == (5 * CELL + 20, HEADER_H + CELL + 34)  # 5 columns, one row for 4 results
    frames = [sheet.getpixel((10 + c * CELL + 2, HEADER_H + 30)) for c in range(5)]
    assert [f != (255, 255, 255) for f in frames] == [True, True, True, True, False]  # 4 framed cells, then empty


def test_a_store_of_another_encoder_and_bad_queries_exit_2(store, capsys):
    other = planted_model(store, image_spec="packaged:efficientnet-lite0?image_size=48")
    assert main(["search", "--model", str(other), "--text", "a red brick"]) == 2
    err = capsys.readouterr().err
    assert "no image embeddings of shapes/all by the model's encoder packaged:efficientnet-lite0?image_size=48" in err
    assert "it holds image embeddings by packaged_efficientnet-lite0_image_size_32" in err
    model = planted_model(store)
    assert main(["search", "--model", str(model), "--image", str(store / "missing.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    (store / "notes.png").write_text("not an image")
    assert main(["search", "--model", str(model), "--image", str(store / "notes.png")]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    assert main(["search", "--model", str(store), "--text", "x"]) == 2
    assert "holds no saved model" in capsys.readouterr().err
    assert main(["search", "--model", str(model), "--text", "x", "--split", "test"]) == 2
    assert "no image embeddings of shapes/test" in capsys.readouterr().err
