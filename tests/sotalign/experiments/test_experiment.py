"""An experiment on a dataset of one's own: embedded with `embed_dataset`, its budget drawn by
`load_data` (validation and, without a test split, a test set held out of the pool), trained
and scored like the bundled benchmark."""

import numpy as np
import pytest
import torch
from PIL import Image

from sotalign.data.extract import embed_dataset
from sotalign.data.registry import load_dataset
from sotalign.encoders import load_encoder
from sotalign.experiments.experiment import Experiment, load_data
from sotalign.two_stage import fit

IMAGE = "packaged:efficientnet-lite0?image_size=32"
COLOURS = ["red", "green", "blue", "black", "white", "cat", "dog", "car", "photo", "the"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_bert_dir):
    """Two datasets of one's own in one store: ``pairs`` (30 images, 2 captions each) and ``other``
    (12 images of another look, 1 caption each), a source of unpaired data for ``pairs``."""
    root = tmp_path_factory.mktemp("own")
    encoders = {
        IMAGE: load_encoder(IMAGE, device="cpu"),
        f"hf:{tiny_bert_dir}": load_encoder(f"hf:{tiny_bert_dir}", device="cpu"),
    }
    for name, n, captions in (("pairs", 30, 2), ("other", 12, 1)):
        rows = ["image,caption"]
        for i in range(n):
            colour = (8 * i, 255 - 8 * i, (40 * i) % 256) if name == "pairs" else (255, 20 * i, 0)
            Image.new("RGB", (16, 16), colour).save(root / f"{name}{i}.png")
            rows += [f"{name}{i}.png,a {COLOURS[i % 10]} photo", f"{name}{i}.png,the {COLOURS[(i + 3) % 10]} car"][
                :captions
            ]
        (root / f"{name}.csv").write_text("\n".join(rows) + "\n")
        for encoder in encoders.values():
            embed_dataset(load_dataset(str(root / f"{name}.csv")), "all", encoder, root / "store", progress=False)
    return root / "store", {spec: e.id for spec, e in encoders.items()}, f"hf:{tiny_bert_dir}"


def own_data(folder, text) -> dict:
    """The data section of an experiment on the store's 30-item "pairs" table: 10 pairs, 5 validation and
    6 test items held out of its one split."""
    return {
        "dataset": "pairs",
        "store": str(folder),
        "image_encoder": IMAGE,
        "text_encoder": text,
        "pool_split": "all",
        "test_split": None,
        "n_test": 6,
        "n_pairs": 10,
        "n_val": 5,
    }


def test_own_dataset_with_a_held_out_test_set(store):
    folder, ids, text = store
    experiment = Experiment.from_dict(
        {
            "name": "mine",
            "data": own_data(folder, text),
        }
    )
    data = load_data(experiment, ids)
    assert len(data.paired_images) == 10 and len(data.validation.images) == 5 and data.n_unpaired == 30 - 5 - 6 - 10
    assert (
        len(data.test.images) == 6
        and len(data.test.captions) == 12
        and sorted(set(data.test.caption_image)) == list(range(6))
    )
    for split in (
        data.paired_images,
        data.validation.images,
        data.unpaired_images,
    ):  # the test images are nobody else's
        assert not any(torch.equal(t, x) for t in data.test.images for x in split)
    again = load_data(experiment.__class__.from_dict({**experiment.to_dict(), "seed": 1}), ids)
    assert all(torch.equal(a, b) for a, b in zip(again.test.images, data.test.images))  # fixed across seeds
    model = data.fit(experiment.config().replace(steps=3, head_dim=8, batch_unpaired=4))
    scores = data.evaluate(model)
    assert 0 <= scores["mean_recall_at_1"] <= 100 and "digits_top1" not in scores


def test_budget_larger_than_the_pool_and_missing_tables_are_named(store):
    folder, ids, text = store
    spec = {
        "dataset": "pairs",
        "store": str(folder),
        "image_encoder": IMAGE,
        "text_encoder": text,
        "pool_split": "all",
        "n_val": 5,
    }
    with pytest.raises(
        ValueError,
        match=r"n_pairs \+ data.n_val \+ data.n_test = 31 exceeds the 30 items of pairs:all \(data.pool_split\)",
    ):
        load_data(Experiment.from_dict({"data": {**spec, "n_pairs": 20, "test_split": None, "n_test": 6}}), ids)
    with pytest.raises(ValueError, match=r"data.test: the store .* holds no pairs:test"):
        load_data(Experiment.from_dict({"data": {**spec, "n_pairs": 10, "test_split": "test"}}), ids)
    assert np.isfinite(
        load_data(
            Experiment.from_dict({"data": {**spec, "n_pairs": 10, "test_split": None, "n_test": 6}}), ids
        ).test.images.numpy()
    ).all()


def test_sail_needs_no_unpaired_budget_and_sotalign_says_it_needs_one():
    sail = Experiment.from_dict(
        {"method": "sail", "data": {"dataset": "synthetic", "n_pairs": 16, "n_unpaired": 0, "n_val": 20}}
    )
    data = load_data(sail)
    assert data.unpaired_images is None and data.n_unpaired == 0
    model = data.fit(sail.config().replace(steps=2, head_dim=8))
    assert 0 <= data.evaluate(model)["mean_recall_at_1"] <= 100
    with pytest.raises(ValueError, match="needs unpaired images and texts"):
        fit(
            data.paired_images,
            data.paired_texts,
            None,
            None,
            sail.config().replace(method="sotalign", divergence="klot"),
        )


def test_unpaired_data_from_another_table_and_its_distance_to_the_pairs(store):
    from sotalign.data.extract import read_table, table_dir

    folder, ids, text = store
    spec = own_data(folder, text)
    same = load_data(Experiment.from_dict({"data": spec}), ids)
    other = load_data(Experiment.from_dict({"data": {**spec, "unpaired_images": "other:all", "n_unpaired": 8}}), ids)
    table = read_table(table_dir(folder, "other", "all", "image", ids[IMAGE])).embeddings
    assert len(other.unpaired_images) == len(other.unpaired_texts) == 8  # texts still from the pool's leftovers
    assert all(any(torch.equal(x, row) for row in torch.as_tensor(table)) for x in other.unpaired_images)
    assert torch.equal(other.paired_images, same.paired_images)  # the pairs do not depend on the unpaired source
    shift = other.distribution_shift()
    assert shift["ssw/images"] > same.distribution_shift()["ssw/images"] and shift["ssw/total"] == pytest.approx(
        shift["ssw/images"] + shift["ssw/texts"]
    )
    with pytest.raises(ValueError, match="n_unpaired = 13 exceeds the 12 image rows of other:all"):
        load_data(
            Experiment.from_dict(
                {
                    "data": {
                        **spec,
                        "unpaired_images": "other:all",
                        "unpaired_texts": "other:all",
                        "n_unpaired": 13,
                    }
                }
            ),
            ids,
        )


def test_the_teacher_method_is_the_teacher_sotalign_learns_from():
    """The tables compare SOTAlign with its teacher: the `teacher` method is SOTAlign's stage 1 on the same
    data, centred on the paired + unpaired embeddings; SAIL, a pairs-only method, centres on the pairs."""
    import torch.nn.functional as F

    tree = {
        "data": {"dataset": "synthetic", "n_pairs": 16, "n_unpaired": 200, "n_val": 20},
        "align": {"steps": 2, "head_dim": 8, "batch_unpaired": 32},
    }
    data = load_data(Experiment.from_dict(tree))
    models = {
        method: fit(
            data.paired_images,
            data.paired_texts,
            data.unpaired_images,
            data.unpaired_texts,
            Experiment.from_dict({**tree, "method": method}).config(),
        )
        for method in ("teacher", "sotalign", "sail")
    }
    alone, learnt_from = models["teacher"].teacher, models["sotalign"].teacher
    for name in ("image_projection", "text_projection"):
        assert torch.equal(getattr(alone, name), getattr(learnt_from, name))
    for paired, unpaired, prep in (
        (data.paired_images, data.unpaired_images, "image_prep"),
        (data.paired_texts, data.unpaired_texts, "text_prep"),
    ):
        everything = F.normalize(torch.cat([paired, unpaired]).double(), dim=1).mean(0)
        assert torch.allclose(getattr(alone, prep).mean.double(), everything, atol=1e-6)
        assert torch.equal(getattr(alone, prep).mean, getattr(learnt_from, prep).mean)
        assert torch.allclose(
            getattr(models["sail"], prep).mean.double(), F.normalize(paired.double(), dim=1).mean(0), atol=1e-6
        )
    images = data.test.images
    assert torch.allclose(
        models["teacher"].encode_image(images), F.normalize(learnt_from.project_images(images), dim=1), atol=1e-5
    )


def test_plan_diagnostic_where_the_pairing_is_known(store):
    """Unpaired items of one pool: image i's partner is item i's first caption. The diagnostic is the plan of the
    teacher the run trains against, at its eps_teacher; images of another table have no partner among the pool's texts."""
    from sotalign.evaluation import plan_accuracy

    folder, ids, text = store
    tree = {
        "data": own_data(folder, text),
        "align": {"steps": 1, "head_dim": 8, "batch_unpaired": 64, "eps_teacher": 0.05},
    }
    experiment = Experiment.from_dict(tree)
    data = load_data(experiment, ids)
    assert sorted(data.unpaired_image_labels) == sorted(data.unpaired_text_labels)  # every leftover item, both sides
    config = experiment.config()
    model = fit(data.paired_images, data.paired_texts, data.unpaired_images, data.unpaired_texts, config)
    teacher = model.teacher
    reference = plan_accuracy(
        teacher.project_images(data.unpaired_images),
        teacher.project_texts(data.unpaired_texts),
        data.unpaired_image_labels,
        data.unpaired_text_labels,
        epsilon=0.05,
    )
    diagnostic = data.plan_diagnostic(config)  # the batch (64) covers the 9 unpaired items
    assert diagnostic.keys() == {f"diagnostic/{k}" for k in reference}
    for key, value in reference.items():
        assert diagnostic[f"diagnostic/{key}"] == pytest.approx(value, abs=1e-4), key
    assert diagnostic["diagnostic/chance_mass_on_partners"] == pytest.approx(100 / 9)
    other = load_data(Experiment.from_dict({**tree, "data": {**tree["data"], "unpaired_images": "other:all"}}), ids)
    assert list(other.unpaired_image_labels) == [f"other/other{i}.png" for i in range(12)]  # labelled by store id
    assert other.plan_diagnostic(config) == {}  # but none of the pool's captions is their partner
    assert (
        load_data(Experiment.from_dict({**tree, "data": {**tree["data"], "dataset": "synthetic"}})).plan_diagnostic(
            config
        )
        == {}
    )


def test_an_unnamed_experiment_logs_to_its_datas_family():
    """Runs scored on different data never share an MLflow experiment by default: the bundled benchmark,
    a user's dataset, and that dataset scored on another's test split are three."""
    assert Experiment.from_dict({}).name == "openmoji"
    assert Experiment.from_dict({"data": {"dataset": "synthetic"}}).name == "synthetic"
    own = {"pairs": "mine:train", "test": "mine:test", "validation": "mine:val"}
    assert Experiment.from_dict({"data": own}).name == "mine"
    assert Experiment.from_dict({"data": {**own, "test": "theirs:test"}}).name == "mine-test-theirs"
    assert Experiment.from_dict({"name": "mine-v2", "data": own}).name == "mine-v2"
    assert Experiment.from_dict(Experiment.from_dict({"data": own}).to_dict()).name == "mine"
