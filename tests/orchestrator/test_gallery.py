"""Every run on a dataset with images logs its retrieval gallery and failure summary; two runs of one
split show the same queries; `compare --gallery` stitches them; `search --run` reads a run's model.
The data is a user's table of drawn shapes, embedded by `sotalign embed` with the packaged encoders;
the drawing of a gallery is checked on planted rankings. Also on these runs: a SOTAlign run that logs
the teacher's plan diagnostic fits its teacher once, and ends where a fresh fit ends."""

import csv
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from orchestrator.cli import main
from orchestrator.gallery import CELL, GREEN, GREY, HEADER_H, LABEL_W, ORANGE, THUMB, draw_gallery
from sotalign.experiments.retrieval_cases import Hit, QueryResult

IMAGE = "packaged:efficientnet-lite0?image_size=32"  # the packaged weights at a test size
TEXT = "packaged:all-minilm-l6-v2"
COLOURS = ["red", "green", "blue", "gold", "purple", "orange", "black", "hotpink"]
SHAPES = ["circle", "square", "diamond", "bar", "ring"]


def draw_shape(path, colour, shape):
    image = Image.new("RGB", (64, 64), "white")
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse([8, 8, 56, 56], fill=colour)
    elif shape == "square":
        pen.rectangle([10, 10, 54, 54], fill=colour)
    elif shape == "diamond":
        pen.polygon([(32, 4), (60, 32), (32, 60), (4, 32)], fill=colour)
    elif shape == "bar":
        pen.rectangle([2, 24, 62, 40], fill=colour)
    else:
        pen.ellipse([8, 8, 56, 56], outline=colour, width=8)
    image.save(path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """40 drawn shapes, every third one in the test split, embedded into a store."""
    folder = tmp_path_factory.mktemp("gallery")
    rows = []
    for index, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        draw_shape(folder / f"{colour}-{shape}.png", colour, shape)
        rows.append(f"{colour}-{shape}.png,a {colour} {shape},{'test' if index % 3 == 0 else 'pool'}\n")
    (folder / "shapes.csv").write_text("image,caption,split\n" + "".join(rows))
    for spec in (IMAGE, TEXT):
        args = ["embed", "--encoder", spec, "--dataset", str(folder / "shapes.csv"), "--out", str(folder / "store")]
        assert main([*args, "--device", "cpu"]) == 0
    return folder


def train(folder: Path, method: str, dataset: str = "shapes") -> str:
    data = {"dataset": dataset, "store": str(folder / "store"), "n_pairs": 12, "n_val": 6}
    data.update(image_encoder=IMAGE, text_encoder=TEXT) if dataset == "shapes" else data.update(n_unpaired=40)
    tree = {
        "name": dataset,
        "method": method,
        "data": data,
        "align": {"steps": 6, "head_dim": 8, "batch_unpaired": 8, "eval_every": 3},
        "run": {"workers": 0},
    }
    path = folder / f"{method}-{dataset}.yaml"
    path.write_text(yaml.safe_dump(tree))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["train", str(path), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(dataset)
    return client.search_runs([experiment.experiment_id], f"tags.method = '{method}'")[0].info.run_id


def test_a_run_with_the_plan_diagnostic_fits_its_teacher_once(shapes, monkeypatch):
    import sotalign.experiments.experiment as harness
    import sotalign.two_stage as two_stage
    from orchestrator.experiment_file import load_experiment_file
    from sotalign.encoders import encoder_id

    calls = []
    counted = lambda fit: lambda *a, **k: calls.append(1) or fit(*a, **k)  # noqa: E731
    monkeypatch.setattr(harness, "fit_stage1", counted(harness.fit_stage1))
    monkeypatch.setattr(two_stage, "fit_stage1", counted(two_stage.fit_stage1))
    run = MlflowClient(f"sqlite:///{shapes / 'mlflow.db'}").get_run(train(shapes, "sotalign"))
    assert len(calls) == 1 and "diagnostic/plan_mass_on_partners" in run.data.metrics
    monkeypatch.undo()
    experiment, _ = load_experiment_file(shapes / "sotalign-shapes.yaml")
    data = harness.load_data(experiment, {spec: encoder_id(spec) for spec in (IMAGE, TEXT)})
    expected = data.evaluate(data.fit(experiment.config()))  # its own stage 1, no diagnostic
    assert run.data.metrics["mean_recall_at_1"] == pytest.approx(expected["mean_recall_at_1"], abs=1e-6)


def test_runs_log_a_gallery_of_the_same_queries_and_a_failure_summary(shapes, capsys):
    runs = [train(shapes, method) for method in ("sail", "teacher")]
    client = MlflowClient(f"sqlite:///{shapes / 'mlflow.db'}")
    galleries = []
    for run_id in runs:
        assert client.get_run(run_id).data.tags["gallery"] == "plots/gallery.png"
        folder = Path(client.download_artifacts(run_id, "", str(shapes / run_id)))
        galleries.append(Image.open(folder / "plots" / "gallery.png").convert("RGB"))
        with open(folder / "eval" / "worst.csv") as table:
            rows = list(csv.DictReader(table))
        worst = [r for r in rows if r["kind"] == "caption"]
        ranks = [int(r["rank"]) for r in worst]
        assert worst and ranks == sorted(ranks, reverse=True) and all(1 <= k <= 14 for k in ranks)  # 14 test images
        assert all(r["query"].startswith("a ") and r["right"].startswith("shapes/") for r in worst)
        missed = [r for r in worst if int(r["rank"]) > 1]
        assert all(r["returned"] != r["right"] for r in missed)
        confusions = [r for r in rows if r["kind"] == "confusion"]
        assert sum(int(r["count"]) for r in confusions) == len(missed)  # one per missed caption (14 < 20 rows)
    first, second = galleries
    assert first.size == second.size and first.tobytes() != second.tobytes()  # two models' answers
    queries = (0, HEADER_H, LABEL_W - 10, first.height)  # the column of the queries: the split's, not the run's
    assert first.crop(queries).tobytes() == second.crop(queries).tobytes()

    out = shapes / "side.png"
    command = ["compare", "--experiment", "shapes", "--group-by", "method", "--out", str(shapes / "bars.png")]
    assert main([*command, "--tracking-uri", f"sqlite:///{shapes / 'mlflow.db'}", "--gallery", str(out)]) == 0
    stitched = Image.open(out)
    methods = {
        r.data.tags["method"] for r in client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    }
    assert stitched.size == (len(methods) * (first.width + 10) + 10, first.height + 40)  # one gallery per method

    caption = "a red circle"
    assert (
        main(["search", "--run", runs[0], "--tracking-uri", f"sqlite:///{shapes / 'mlflow.db'}", "--text", caption])
        == 0
    )
    out = capsys.readouterr().out
    assert f"top 5 images of shapes/test for {caption!r}" in out and out.count("| shapes/") == 5

    for row in (shapes / "shapes.csv").read_text().splitlines()[1:]:  # the test images gone from this machine
        if row.endswith(",test"):
            (shapes / row.split(",")[0]).unlink()
    run = client.get_run(train(shapes, "teacher"))  # the newest teacher run
    assert run.info.status == "FINISHED" and run.data.tags["gallery"].startswith("skipped: ")
    assert "differ from what the store embedded" in run.data.tags["gallery"] and "mean_recall_at_1" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {"plots/training.png"}
    assert not client.list_artifacts(run.info.run_id, "eval")  # neither the gallery nor worst.csv


def test_a_synthetic_run_says_why_it_has_no_gallery(tmp_path):
    run_id = train(tmp_path, "sail", dataset="synthetic")
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["gallery"] == "skipped: synthetic data has no images"
    files = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run_id, "plots")}
    assert files == {"plots/training.png"}


def test_the_gallery_frames_the_right_item_where_the_model_ranks_it(tmp_path):
    """Planted rankings: the right image third for the first caption, absent from the top 3 for the
    second (shown after them in orange); the right caption first for the image."""
    colours = ["red", "green", "blue", "gold", "purple"]
    image_of = lambda row: Image.new("RGB", (32, 32), colours[row])  # noqa: E731
    caption_of = lambda row: f"caption {row}"  # noqa: E731
    hits = lambda rows, right: [Hit(r, 1.0 - 0.1 * i, r == right) for i, r in enumerate(rows)]  # noqa: E731
    by_text = [QueryResult(0, hits([4, 1, 0], 0), 0, 3), QueryResult(2, hits([1, 3, 4], 2), 2, 9)]
    by_image = [QueryResult(1, hits([1, 0, 2], 1), 1, 1)]
    path = draw_gallery(by_text, by_image, image_of, caption_of, "planted", tmp_path / "g.png")
    image = Image.open(path).convert("RGB")

    def frame(row: int, column: int, text_cells: bool = False):  # the top edge of a candidate's frame
        from orchestrator.gallery import ROW_H, TEXT_CELL_W

        y = HEADER_H + 28 + row * ROW_H + (28 if text_cells else 0) + 2
        x = LABEL_W + column * (TEXT_CELL_W if text_cells else CELL) + THUMB // 2
        return image.getpixel((x, y))

    assert [frame(0, c) for c in range(3)] == [GREY, GREY, GREEN]
    assert [frame(1, c) for c in range(3)] == [GREY, GREY, GREY]
    assert image.getpixel((LABEL_W + 3 * CELL + 8 + THUMB // 2, HEADER_H + 28 + 1 * (CELL + 20) + 2)) == ORANGE
    assert [frame(2, c, text_cells=True) for c in range(3)] == [GREEN, GREY, GREY]
