"""An experiment that names its real sources (``data.pairs``, ``data.unpaired_images``,
``data.unpaired_texts``, ``data.validation``, ``data.test``) instead of one pool with a hidden
pairing: the same rows fed either way give the same budget and bit-identical metrics; wrong
sources are refused with one clear error before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sotalign.data.extract import embed_dataset, embed_rows, read_table, table_dir
from sotalign.data.registry import load_dataset
from sotalign.encoders import load_encoder
from sotalign.experiments.experiment import Experiment, load_data
from tests.sotalign.experiments.test_experiment import COLOURS, IMAGE

ALIGN = {"steps": 6, "head_dim": 8, "batch_unpaired": 8, "eval_every": 3}  # tiny, deterministic on CPU


class StoredRows:
    """Rows already embedded, re-written as a new table: what an encoder would write for the same inputs."""

    def __init__(self, encoder_id: str, modality: str, embeddings: torch.Tensor) -> None:
        self.id, self.modality, self.dim, self.rows = encoder_id, modality, embeddings.shape[1], embeddings

    def embed(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(rows)


def write_table(store, dataset, split, modality, encoder_id, ids, embeddings, columns=None) -> None:
    embed_rows(
        StoredRows(encoder_id, modality, embeddings),
        embeddings.__getitem__,
        list(ids),
        table_dir(store, dataset, split, modality, encoder_id),
        metadata={"dataset": dataset, "split": split},
        keys=list(ids),
        columns=columns,
        progress=False,
    )


@pytest.fixture(scope="module")
def pool_store(tmp_path_factory, tiny_bert_dir):
    """A 30-item captioned pool (2 captions per image) embedded with the packaged image encoder and a
    tiny BERT: the one-pool mode's data, and what the sources below are cut from."""
    from PIL import Image

    root = tmp_path_factory.mktemp("sources")
    rows = ["image,caption"]
    for i in range(30):
        Image.new("RGB", (16, 16), (8 * i, 255 - 8 * i, (40 * i) % 256)).save(root / f"p{i}.png")
        rows += [f"p{i}.png,a {COLOURS[i % 10]} photo", f"p{i}.png,the {COLOURS[(i + 3) % 10]} car"]
    (root / "pool.csv").write_text("\n".join(rows) + "\n")
    text = f"hf:{tiny_bert_dir}"
    ids = {}
    for spec in (IMAGE, text):
        encoder = load_encoder(spec, device="cpu")
        embed_dataset(load_dataset(str(root / "pool.csv")), "all", encoder, root / "store", progress=False)
        ids[spec] = encoder.id
    return root / "store", ids, text


def pool_mode(store, text) -> dict:
    return {
        "name": "sources",
        "seed": 3,
        "data": {
            "dataset": "pool",
            "store": str(store),
            "image_encoder": IMAGE,
            "text_encoder": text,
            "pool_split": "all",
            "test_split": None,
            "n_test": 6,
            "n_val": 5,
            "n_pairs": 10,
        },
        "align": ALIGN,
    }


@pytest.fixture(scope="module")
def cut_sources(pool_store):
    """The one-pool budget of ``pool_mode`` written out as five sources of real data, row for row: its
    pairs (one caption each), its unpaired images (image-only) and texts (text-only) in the order drawn,
    its validation pairs and its test images with all their captions."""
    store, ids, text = pool_store
    experiment = Experiment.from_dict(pool_mode(store, text))
    data = load_data(experiment, ids)
    image_id, text_id = ids[IMAGE], ids[text]
    images = read_table(table_dir(store, "pool", "all", "image", image_id))
    position = {row.tobytes(): k for k, row in enumerate(images.embeddings.numpy())}

    def items(embeddings: torch.Tensor) -> list[int]:  # pool rows of embedded images (each image is distinct)
        return [position[row.tobytes()] for row in embeddings.numpy()]

    names = np.asarray(images.ids)
    for dataset, view in (("own-val", data.validation), ("own-pairs", None)):
        imgs = data.paired_images if view is None else view.images
        txts = data.paired_texts if view is None else view.first_captions
        owners = names[items(imgs)]
        write_table(store, dataset, "all", "image", image_id, owners, imgs)
        write_table(store, dataset, "all", "text", text_id, [f"{o}#0" for o in owners], txts, {"image_id": owners})
    test_owners = names[items(data.test.images)]
    write_table(store, "own-test", "all", "image", image_id, test_owners, data.test.images)
    caption_owners = test_owners[data.test.caption_image]
    write_table(
        store,
        "own-test",
        "all",
        "text",
        text_id,
        [f"{o}#{k}" for k, o in enumerate(caption_owners)],
        data.test.captions,
        {"image_id": caption_owners},
    )
    write_table(store, "own-images", "all", "image", image_id, names[items(data.unpaired_images)], data.unpaired_images)
    text_owners = names[data.unpaired_text_labels]  # pool mode labels a leftover caption by its item
    write_table(
        store,
        "own-texts",
        "all",
        "text",
        text_id,
        [f"{o}#0" for o in text_owners],
        data.unpaired_texts,
        {"image_id": text_owners},
    )
    return experiment, data


def sources_mode(store, text, **changes) -> dict:
    tree = pool_mode(store, text)
    data = {k: v for k, v in tree["data"].items() if k not in ("dataset", "pool_split", "test_split", "n_test")}
    data.update(
        pairs="own-pairs:all",
        unpaired_images="own-images:all",
        unpaired_texts="own-texts:all",
        validation="own-val:all",
        test="own-test:all",
        n_pairs=None,
    )
    return {**tree, "data": {**data, **changes}}


def test_the_same_rows_as_one_pool_or_as_sources_give_the_same_budget_and_metrics(pool_store, cut_sources):
    store, ids, text = pool_store
    pooled, pool_data = cut_sources
    named = Experiment.from_dict(sources_mode(store, text))
    data = load_data(named, ids)
    for field in ("paired_images", "paired_texts", "unpaired_images", "unpaired_texts"):
        assert torch.equal(getattr(data, field), getattr(pool_data, field)), field
    for view in ("validation", "test"):
        ours, theirs = getattr(data, view), getattr(pool_data, view)
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.captions, theirs.captions), view
        assert np.array_equal(ours.caption_image, theirs.caption_image), view
    assert data.distribution_shift() == pool_data.distribution_shift()
    config = named.config()
    assert data.plan_diagnostic(config) == pool_data.plan_diagnostic(config) != {}  # partners known by image id
    model, pool_model = data.fit(config), pool_data.fit(pooled.config())
    assert data.evaluate(model) == pool_data.evaluate(pool_model)  # bit-identical, not approximately
    assert data.validate(model) == pool_data.validate(pool_model)
    assert [r["val/mean_recall_at_1"] for r in model.history if "val/mean_recall_at_1" in r] == [
        r["val/mean_recall_at_1"] for r in pool_model.history if "val/mean_recall_at_1" in r
    ]


def test_sources_tag_the_run_and_subsample_with_the_seed(pool_store, cut_sources):
    store, ids, text = pool_store
    experiment = Experiment.from_dict(sources_mode(store, text, n_pairs=4, n_unpaired=5))
    tags = experiment.tags()
    assert tags["dataset"] == "own-pairs" and tags["source/pairs"] == "own-pairs:all"
    assert tags["source/unpaired_images"] == "own-images:all" and tags["source/test"] == "own-test:all"
    data = load_data(experiment, ids)
    assert len(data.paired_images) == 4 and data.n_unpaired == 5 and len(data.unpaired_texts) == 5
    again = load_data(Experiment.from_dict(sources_mode(store, text, n_pairs=4, n_unpaired=5)), ids)
    assert torch.equal(data.paired_images, again.paired_images) and torch.equal(
        data.unpaired_texts, again.unpaired_texts
    )
    other = load_data(Experiment.from_dict({**sources_mode(store, text, n_pairs=4, n_unpaired=5), "seed": 4}), ids)
    assert not torch.equal(data.paired_images, other.paired_images)
    pooled = Experiment.from_dict(pool_mode(store, text)).tags()
    assert pooled["source/pairs"] == "pool:all (pairing hidden)" and pooled["source/test"] == "held out of pool:all"


def test_several_unpaired_collections_are_read_as_one(pool_store, cut_sources):
    store, ids, text = pool_store
    both = ["own-images:all", "own-val:all"]  # a second image collection (its captions unused)
    data = load_data(Experiment.from_dict(sources_mode(store, text, unpaired_images=both, validation=None)), ids)
    single = load_data(Experiment.from_dict(sources_mode(store, text, validation=None)), ids)
    assert data.n_unpaired == single.n_unpaired + 5
    assert torch.equal(data.unpaired_images[: single.n_unpaired], single.unpaired_images)
    tags = Experiment.from_dict(sources_mode(store, text, unpaired_images=both, validation=None)).tags()
    assert tags["source/unpaired_images"] == "own-images:all, own-val:all"


def test_without_held_out_sources_validation_and_test_are_held_out_of_the_pairs(pool_store, cut_sources):
    store, ids, text = pool_store
    tree = sources_mode(store, text, validation=None, test=None, n_val=2, n_test=3)
    data = load_data(Experiment.from_dict(tree), ids)
    assert len(data.validation.images) == 2 and len(data.test.images) == 3 and len(data.paired_images) == 10 - 5
    assert Experiment.from_dict(tree).tags()["source/test"] == "held out of own-pairs:all"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"unpaired_images": "own-texts:all"}, r"data.unpaired_images: own-texts:all holds texts only, no images"),
        ({"unpaired_texts": "own-images:all"}, r"data.unpaired_texts: own-images:all holds images only, no texts"),
        ({"unpaired_images": "nothing:all"}, r"data.unpaired_images: the store .* holds no nothing:all"),
        ({"pairs": "own-pairs:train"}, r"data.pairs: the store .* holds no own-pairs:train"),
        ({"n_unpaired": 99}, r"data.n_unpaired = 99 exceeds the \d+ image rows of own-images:all"),
    ],
)
def test_wrong_sources_are_named(pool_store, cut_sources, changes, message):
    store, ids, text = pool_store
    with pytest.raises(ValueError, match=message):
        load_data(Experiment.from_dict(sources_mode(store, text, **changes)), ids)


def test_a_source_embedded_with_another_encoder_is_named(pool_store, cut_sources, tiny_bert_dir):
    store, ids, text = pool_store
    tree = sources_mode(store, text)
    tree["data"]["image_encoder"] = "packaged:efficientnet-lite0?image_size=64"
    with pytest.raises(ValueError, match=r"data.pairs: own-pairs:all's images were embedded with another encoder"):
        load_data(Experiment.from_dict(tree), {**ids, "packaged:efficientnet-lite0?image_size=64": "lite0@64"})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"unpaired_images": "own-test:all"}, r"data.unpaired_images names own-test:all, which is data.test"),
        ({"unpaired_texts": ["own-texts:all", "own-val:all"]}, r"unpaired_texts names own-val:all, which is data.val"),
        ({"pairs": "own-val:all"}, r"data.pairs names own-val:all, which is data.validation"),
        ({"unpaired_texts": None}, r"data.unpaired_images is set but not data.unpaired_texts"),
        ({"unpaired_images": None, "unpaired_texts": None, "n_unpaired": 5}, r"no unpaired source is named"),
        ({"unpaired_images": "own-images"}, r"data.unpaired_images must read DATASET:SPLIT"),
        ({"unpaired_images": ["a:b", "a:b"]}, r"lists a source twice"),
    ],
)
def test_sources_that_would_train_on_evaluation_data_or_miss_a_side_are_refused(pool_store, changes, message):
    store, ids, text = pool_store
    with pytest.raises(ValueError, match=message):
        load_data(Experiment.from_dict(sources_mode(store, text, **changes)), ids)


def test_one_pool_mode_refuses_every_pair_and_training_or_selecting_on_its_test_split():
    with pytest.raises(ValueError, match=r"data.n_pairs: null \(every pair\) needs data.pairs"):
        Experiment.from_dict({"data": {"n_pairs": None}})
    with pytest.raises(ValueError, match=r"data.unpaired_texts names openmoji:test, which is data.test"):
        Experiment.from_dict({"data": {"unpaired_texts": "openmoji:test"}})
    with pytest.raises(ValueError, match=r"data.pool_split names openmoji:test, which is data.test"):
        Experiment.from_dict({"data": {"pool_split": "test"}})
    with pytest.raises(ValueError, match=r"digits:classes, which is the digits zero-shot test \(its class prompts\)"):
        Experiment.from_dict({"data": {"unpaired_texts": "digits:classes"}})
    with pytest.raises(ValueError, match=r"digits:test, which is the digits zero-shot test \(its images\)"):
        Experiment.from_dict({"data": {"unpaired_images": "digits:test"}})
    Experiment.from_dict({"data": {"unpaired_images": "digits:pool", "unpaired_texts": "digits-captions:pool"}})
    with pytest.raises(ValueError, match=r"data.validation and data.test both name iconify-emoji:test"):
        Experiment.from_dict({"data": {"dataset": "iconify-emoji", "val_split": "test"}})


def test_selecting_on_the_test_source_is_refused(pool_store):
    store, ids, text = pool_store
    with pytest.raises(ValueError, match=r"data.validation and data.test both name own-test:all"):
        Experiment.from_dict(sources_mode(store, text, validation="own-test:all"))


def test_digit_captions_are_a_text_source_apart_from_the_zero_shot_prompts():
    from sotalign.data.digits import TEMPLATES
    from sotalign.data.registry import load_dataset

    captions, digits = load_dataset("digits-captions"), load_dataset("digits")
    assert captions.modalities == ("text",) and len(captions.texts) == len(digits.splits["pool"])
    assert not set(captions.texts) & set(digits.prompts())  # never a prompt the zero-shot score uses
    assert all(any(name in text for name in digits.class_names) for text in captions.texts)
    assert {t.format("x") for t in TEMPLATES}.isdisjoint(
        {t.replace(n, "x") for t in captions.texts for n in digits.class_names}
    )
