"""A researcher's own semi-supervised data, end to end through the commands README shows: real pairs
as WebDataset shards, uncaptioned images as a folder, image-less captions as a text file and a test
set as COCO caption JSON (all built here from the bundled OpenMoji images), each embedded with
`sotalign embed`, then `sotalign train` and `sotalign sweep` on the experiment that names them as
sources, and `sotalign compare` over the runs in MLflow."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from sotalign.data.registry import load_dataset

IMAGE = "packaged:efficientnet-lite0?image_size=32"  # the packaged weights at a test size
TEXT = "packaged:all-minilm-l6-v2"
N_PAIRS, N_IMAGES, N_TEXTS, N_TEST = 80, 150, 150, 50  # disjoint OpenMoji items for each source


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """The four sources as researchers hold them, in a folder of their own."""
    folder = tmp_path_factory.mktemp("own-data")
    emoji = load_dataset("openmoji")
    first = {}
    for row, owner in enumerate(emoji.caption_image):
        first.setdefault(int(owner), emoji.captions[row])
    items = iter(range(len(emoji.image_ids)))
    pairs, images, texts, test = ([next(items) for _ in range(n)] for n in (N_PAIRS, N_IMAGES, N_TEXTS, N_TEST))
    (folder / "pairs").mkdir()
    for shard, chunk in enumerate((pairs[: N_PAIRS // 2], pairs[N_PAIRS // 2 :])):  # img2dataset's layout
        with tarfile.open(folder / "pairs" / f"{shard:05d}.tar", "w") as tar:
            for i in chunk:
                add(tar, f"{i:09d}.png", png(emoji.load_image(i)))
                add(tar, f"{i:09d}.txt", first[i].encode())
                add(tar, f"{i:09d}.json", json.dumps({"key": f"{i:09d}"}).encode())
    for i in images:  # uncaptioned images, nested folders, no classes
        path = folder / "unpaired-images" / f"batch{i % 3}" / f"{emoji.image_ids[i]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        emoji.load_image(i).save(path)
    (folder / "unpaired-texts.txt").write_text("".join(f"{first[i]}\n" for i in texts))
    (folder / "test" / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": []}
    for image_id, i in enumerate(test):
        emoji.load_image(i).save(folder / "test" / "images" / f"{image_id}.png")
        coco["images"].append({"id": image_id, "file_name": f"images/{image_id}.png"})
        coco["annotations"] += [
            {"id": len(coco["annotations"]) + k, "image_id": image_id, "caption": emoji.captions[row]}
            for k, row in enumerate(r for r, owner in enumerate(emoji.caption_image) if owner == i)
        ]
    (folder / "test" / "captions.json").write_text(json.dumps(coco))
    return folder


@pytest.fixture(scope="module")
def embedded(own_data):
    """`sotalign embed` of each source, as README shows it."""
    store = own_data / "store"
    for dataset, name, form in (
        ("pairs/{00000..00001}.tar", "own-pairs", "auto"),
        ("unpaired-images", "own-images", "images"),  # sub-folders are not classes here
        ("unpaired-texts.txt", "own-texts", "auto"),
        ("test/captions.json", "own-test", "auto"),
    ):
        args = ["embed", "--dataset", str(own_data / dataset), "--name", name, "--format", form, "--out", str(store)]
        assert main([*args, "--encoder", IMAGE, "--encoder", TEXT, "--device", "cpu"]) == 0, dataset
    return store


def experiment(own_data: Path, store: Path, **data) -> dict:
    return {
        "name": "own-data",
        "method": "sotalign",
        "data": {
            "store": str(store),
            "image_encoder": IMAGE,
            "text_encoder": TEXT,
            "pairs": "own-pairs:all",
            "unpaired_images": "own-images:all",
            "unpaired_texts": "own-texts:all",
            "test": "own-test:all",
            "n_pairs": None,
            "n_val": 20,
            **data,
        },
        "align": {"head_dim": 16, "steps": 30, "batch_unpaired": 64, "log_every": 10, "eval_every": 10},
        "run": {"workers": 0},
    }


def test_each_source_lands_in_the_store_with_only_the_modalities_it_has(embedded):
    from sotalign.data.extract import read_table, table_dir
    from sotalign.data.sources import SourceRef, check_source
    from sotalign.encoders import encoder_id

    ids = {"image": encoder_id(IMAGE), "text": encoder_id(TEXT)}
    rows = {
        ("own-pairs", "image"): N_PAIRS,
        ("own-pairs", "text"): N_PAIRS,
        ("own-images", "image"): N_IMAGES,
        ("own-texts", "text"): N_TEXTS,
        ("own-test", "image"): N_TEST,
    }
    for (name, modality), n in rows.items():
        assert len(read_table(table_dir(embedded, name, "all", modality, ids[modality])).ids) == n, (name, modality)
    test_captions = read_table(table_dir(embedded, "own-test", "all", "text", ids["text"]))
    assert len(test_captions.ids) > N_TEST  # several captions per test image, as COCO gives them
    with pytest.raises(ValueError, match="own-texts:all holds texts only, no images"):
        check_source(str(embedded), SourceRef("own-texts", "all"), "image", ids["image"], "data.unpaired_images")


def test_train_sweep_and_compare_on_ones_own_sources(own_data, embedded, tmp_path, ray_cluster, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(experiment(own_data, embedded)))
    assert main(["train", str(path), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("own-data").experiment_id])
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["source/pairs"] == "own-pairs:all" and tags["source/unpaired_texts"] == "own-texts:all"
    assert tags["source/test"] == "own-test:all" and tags["dataset"] == "own-pairs"
    assert tags["n_pairs"] == str(N_PAIRS - 20) and tags["n_unpaired"] == str(N_IMAGES)  # n_val held out of the pairs
    assert 0 <= metrics["mean_recall_at_1"] <= 100 and "ssw/total" in metrics
    assert not any(k.startswith("diagnostic/") for k in metrics)  # the images and texts are no one's partners
    assert tags["gallery"] == "plots/gallery.png"  # test images re-read from the COCO source
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} >= {"plots/gallery.png"}

    space = {
        "name": "own-sweep",
        "base": {**experiment(own_data, embedded), "name": "own-data"},
        "metric": "val/mean_recall_at_1",
        "mode": "max",
        "max_concurrent": 2,
        "sampler": {"type": "grid"},
        "parameters": {"method": {"type": "categorical", "choices": ["sail", "sotalign"]}},
    }
    space["base"]["run"] = {"workers": 0, "storage_path": str(tmp_path / "ray")}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["sweep", str(tmp_path / "space.yaml"), "--tracking-uri", uri]) == 0
    assert main(["compare", "--experiment", "own-data", "--group-by", "method", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "sail" in out and "sotalign" in out


def test_a_text_corpus_given_as_images_is_refused_before_any_run(own_data, embedded, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(experiment(own_data, embedded, unpaired_images="own-texts:all")))
    assert main(["train", str(path), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: data.unpaired_images: own-texts:all holds texts only, no images (a text-only source)"]
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(uri).get_experiment_by_name("own-data")
