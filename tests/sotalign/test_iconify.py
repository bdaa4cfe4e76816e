"""Iconify datasets: npm fetch and cache, rendering, caption rules, the concept split, the store.

One small real set (emojione, 0.7 MB) is packed with npm once per test session (fixtures in
tests/conftest.py); the tests that need it skip where npm is absent. The large sets are never fetched. Rules that need several
sets use small in-memory sets (``make_set``) or a second copy of the real one. Experiments on
Iconify data (the validation split, the unpaired captions, the hidden pairing) run on a store of
a few dozen of its concepts; the CLI on it is tested in tests/orchestrator/test_iconify_cli.py.
"""

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sotalign.data.extract import embed_dataset, read_table
from sotalign.data.iconify import build_dataset, concept_split, load_iconify, load_set, render_icon
from sotalign.data.iconify.dataset import TEST_FRACTION, VALIDATION_FRACTION, collect_images, resolve
from sotalign.data.iconify.fetch import PINNED_VERSIONS, IconSet
from sotalign.data.iconify.names import caption, parse_name
from sotalign.data.views import retrieval_view
from sotalign.encoders import DEFAULT_TEXT_ENCODER, load_encoder
from sotalign.evaluation import plan_accuracy
from sotalign.experiments.experiment import Experiment, load_data


def test_set_names_are_checked_before_anything_is_fetched(tmp_path):
    with pytest.raises(ValueError, match="names an icon set twice"):
        resolve("iconify:twemoji,twemoji")
    with pytest.raises(ValueError, match="unknown Iconify dataset 'iconify-nope'"):
        load_iconify("iconify-nope", tmp_path)


def make_set(prefix, names, aliases=None, chars=None, **bodies):
    """An in-memory icon set: one distinct square per name unless ``bodies`` gives one."""
    icons = {
        n: {"body": bodies.get(n.replace("-", "_"), f'<rect width="{i + 1}" height="1"/>')} for i, n in enumerate(names)
    }
    return IconSet(prefix, "0", icons, {a: {"parent": p} for a, p in (aliases or {}).items()}, {}, chars or {})


def concepts_of(sets):
    images, captions = collect_images(sets)
    return {f"{i.icon_set.prefix}:{i.name}": i.concept for i in images}, captions


def test_pack_is_cached_and_reads_the_pinned_version(npm_cache, small_set, monkeypatch):
    assert small_set.prefix == "emojione" and small_set.version == PINNED_VERSIONS[small_set.prefix]
    assert small_set.licence == "CC-BY-4.0" and small_set.author == "Emoji One" and len(small_set.icons) > 1000
    monkeypatch.setenv("PATH", "")  # a cached set needs no npm
    assert load_set(small_set.prefix, npm_cache).icons.keys() == small_set.icons.keys()


def test_render_a_known_icon_in_colour(small_set):
    image = np.asarray(render_icon(small_set, "red-apple"))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()  # white background
    red = (image[..., 0] > 150) & (image[..., 1] < 90) & (image[..., 2] < 90)
    assert red.mean() > 0.2  # a red apple, not a blank or grey square


def test_render_box_and_current_colour():
    half = make_set(
        "mono",
        ["half", "wide"],
        half='<path fill="currentColor" d="M0 0h8v16H0z"/>',
        wide='<path fill="currentColor" d="M0 0h32v16H0z"/>',
    )
    half.icons["wide"].update(width=32)  # a 32 x 16 box: fitted and centred, white bands above and below
    image = np.asarray(render_icon(half, "half", size=64))
    assert image.shape == (64, 64, 3)
    assert (image[:, :30] == 0).all() and (image[:, 34:] == 255).all()  # currentColor is black, left half
    wide = np.asarray(render_icon(half, "wide", size=64))
    assert (wide[:14] == 255).all() and (wide[18:46] == 0).all() and (wide[50:] == 255).all()


def test_caption_rules_on_names():
    assert caption("red-apple") == "red apple"
    emoji = {"man-dark-skin-tone-blond-hair", "police-car", "police-car-light", "flag-for-flag-japan", "2", "0"}
    assert parse_name("man-dark-skin-tone-blond-hair", emoji, "twemoji") is None
    assert parse_name("police-car-light", emoji, "twemoji") == ("police-car-light", "")  # an emoji, not a style
    assert parse_name("flag-for-flag-japan", emoji, "noto-v1") == ("flag-japan", "")
    assert parse_name("2", emoji, "streamline-emojis") is None and parse_name("0", emoji, "noto") is None
    fluent = {"fist", *(f"fist-{t}" for t in ("light", "medium-light", "medium", "medium-dark", "dark"))}
    assert parse_name("fist-medium-dark", fluent, "fluent-emoji") is None  # the five skin tones of fist
    assert parse_name("fist", fluent, "fluent-emoji") == ("fist", "")
    ph = {"airplane", "airplane-light", "airplane-bold", "lightbulb-light"}
    assert parse_name("airplane-light", ph, "ph") == ("airplane", "light")  # ph's light weight
    assert parse_name("lightbulb-light", ph, "ph") == ("lightbulb-light", "")  # no "lightbulb" in the set
    mono = {"battery-50", "shape", "shape-2", "123", "home", "home-outline-rounded"}
    assert parse_name("battery-50", mono, "mdi") == ("battery-50", "")
    assert parse_name("shape-2", mono, "tabler") is None and parse_name("123", mono, "material-symbols") is None
    assert parse_name("home-outline-rounded", mono, "material-symbols") == ("home", "outline-rounded")
    assert parse_name("baby-2", {"baby-1", "baby-2"}, "streamline-emojis") == ("baby", "")
    assert parse_name("baby-2", {"baby-1", "baby-2"}, "carbon") == ("baby-2", "")


def test_synonyms_join_concepts_unless_a_set_tells_them_apart():
    twemoji = make_set(
        "twemoji",
        ["people-with-bunny-ears", "women-with-bunny-ears", "elf", "admission-tickets"],
        chars={"1f9dd": "elf"},
    )
    old = make_set(
        "old",
        ["people-with-bunny-ears", "bear"],
        aliases={"women-with-bunny-ears": "people-with-bunny-ears", "bear-face": "bear", "arrow-left": "arrow-right"},
    )
    old.aliases["arrow-left"]["hFlip"] = True  # a mirrored arrow: another image, not a synonym
    fluent = make_set("fluent-emoji-flat", ["person-elf"], chars={"1f9dd-fe0f": "person-elf"})
    fx = make_set("fxemoji", ["admissiontickets", "japanflag"])
    concept, captions = concepts_of([twemoji, old, fluent, fx])
    assert concept["old:people-with-bunny-ears"] == "people-with-bunny-ears"
    assert concept["twemoji:women-with-bunny-ears"] == "women-with-bunny-ears"  # twemoji draws both: not merged
    assert concept["fluent-emoji-flat:person-elf"] == concept["twemoji:elf"] == "elf"  # same code points
    assert captions["elf"] == ["elf", "person elf"]
    assert captions["bear"] == ["bear", "bear face"] and "arrow left" not in str(captions)
    assert concept["fxemoji:admissiontickets"] == "admission-tickets" and "fxemoji:japanflag" not in concept


def test_small_set_captions_and_columns(small_set):
    d = build_dataset("t", [small_set])
    assert not any("skin-tone" in i for i in d.image_ids) and len(d.image_ids) > 1000
    japan = d.image_ids.index("emojione:flag-for-japan")
    assert d.image_concept[japan] == "flag-japan"
    caption_concept = d.image_concept[d.caption_image]
    assert set(np.asarray(d.captions)[caption_concept == "heavy-division-sign"]) == {
        "heavy division sign",
        "divide",
        "division sign",
    }
    assert set(d.image_columns["set"]) == {"emojione"} and set(d.image_columns["licence"]) == {"CC-BY-4.0"}
    assert set(caption_concept) == set(d.image_concept)  # every concept has captions, each once
    assert len({(c, t.lower()) for c, t in zip(caption_concept, d.captions)}) == len(d.captions)


def test_concepts_are_split_whole_and_deterministically(small_set):
    copy = dataclasses.replace(small_set, prefix="copy")  # every concept in a second style
    d = build_dataset("t", [small_set, copy])
    split_of = {}
    for split, images in d.splits.items():
        for concept in set(d.image_concept[images]):
            assert split_of.setdefault(concept, split) == split, concept  # all of a concept's images, in any style
            assert concept_split(concept) == split
        _, captions = d.split_indices(split)
        assert set(d.image_concept[d.caption_image[captions]]) == set(d.image_concept[images])
    assert not set(d.image_concept[d.splits["test"]]) & set(d.image_concept[d.splits["pool"]])
    assert (d.image_columns["style"][d.splits["test"]] == "copy").sum() == (
        d.image_columns["style"][d.splits["test"]] == "emojione"
    ).sum()
    fractions = {s: np.mean([v == s for v in split_of.values()]) for s in ("test", "validation")}
    assert abs(fractions["test"] - TEST_FRACTION) < 0.04 and abs(fractions["validation"] - VALIDATION_FRACTION) < 0.03
    again = build_dataset("t", [copy])  # another selection of sets: the same concepts fall on the same side
    for split, images in again.splits.items():
        assert all(split_of[c] == split for c in set(again.image_concept[images]))


def test_store_tables_carry_concepts_and_group_retrieval(small_set, tmp_path, tiny_bert_dir):
    names = ["red-apple", "green-apple", "bear-face", "heavy-division-sign", "flag-for-japan", "dragon-face"]
    small = dataclasses.replace(small_set, icons={n: small_set.icons[n] for n in names})
    d = build_dataset("tiny", [small, dataclasses.replace(small, prefix="copy")])
    d.splits = {"all": np.arange(len(d.image_ids))}
    image_encoder = load_encoder("packaged:efficientnet-lite0?image_size=32", device="cpu")
    text_encoder = load_encoder(f"hf:{tiny_bert_dir}", device="cpu")
    folders = [Path(embed_dataset(d, "all", e, tmp_path, progress=False)) for e in (image_encoder, text_encoder)]
    images, texts = (read_table(f) for f in folders)
    assert set(images.columns) == {"set", "style", "licence", "concept"} and set(texts.columns) == {
        "image_id",
        "concept",
    }
    assert images.ids[0] == "tiny/emojione:bear-face" and list(images.columns["licence"]) == ["CC-BY-4.0"] * 12
    view = retrieval_view(images, texts)
    assert len(set(view.image_group)) == 6 and (view.image_group[:6] == view.image_group[6:]).all()
    assert (view.first_captions[:6] == view.first_captions[6:]).all()  # both styles pair with their concept's caption
    assert len(view.captions) == len(d.captions) == 9  # 6 names + the aliases bear, divide, division sign
    mtimes = [p.stat().st_mtime_ns for f in folders for p in f.iterdir()]
    [embed_dataset(d, "all", e, tmp_path, progress=False) for e in (image_encoder, text_encoder)]
    assert [p.stat().st_mtime_ns for f in folders for p in f.iterdir()] == mtimes  # nothing recomputed
    # a test set of single images held out of the pool would leak its concepts' other styles
    spec = {
        "dataset": "tiny",
        "store": str(tmp_path),
        "image_encoder": "img",
        "text_encoder": "txt",
        "pool_split": "all",
        "test_split": None,
        "n_test": 2,
        "n_pairs": 2,
        "n_val": 2,
    }
    with pytest.raises(ValueError, match="held-out concepts would leak into training"):
        load_data(Experiment.from_dict({"data": spec}), {"img": image_encoder.id, "txt": text_encoder.id})


def tiny_experiment(store, **data):
    return Experiment.from_dict(
        {
            "data": {
                "dataset": "tiny",
                "store": str(store.root),
                "image_encoder": store.image_encoder,
                "text_encoder": DEFAULT_TEXT_ENCODER,
                "n_pairs": 8,
                "val_split": "validation",
                **data,
            },
            "align": {
                "steps": 4,
                "eval_every": 2,
                "log_every": 2,
                "head_dim": 8,
                "batch_unpaired": 256,
                "select_best": False,
            },
        }
    )


def test_iconify_budget_uses_the_validation_split_the_distinct_captions_and_the_concepts(tiny_store):
    tiny, ids = tiny_store.dataset, tiny_store.ids
    experiment = tiny_experiment(tiny_store)
    data = load_data(experiment, ids)
    val_images, val_captions = tiny.split_indices("validation")
    assert len(data.validation.images) == len(val_images) and len(data.validation.captions) == len(val_captions)
    assert len(set(data.validation.image_group)) == 3 and len(val_images) == 6  # three concepts in two styles
    # every pool image not paired is unpaired; the unpaired captions are the pool's, but each paired concept's first
    pool_images, pool_captions = tiny.split_indices("pool")
    paired = Counter(tiny.image_concept[pool_images]) - Counter(data.unpaired_image_labels)
    assert sum(paired.values()) == 8 and data.n_unpaired == len(pool_images) - 8
    assert Counter(data.unpaired_text_labels) == Counter(
        tiny.image_concept[tiny.caption_image[pool_captions]]
    ) - Counter(set(paired))
    # model selection on the split, scored like the test: any image (caption) of the concept is a hit
    config = experiment.config()
    model = data.fit(config)
    assert model.history[-1]["val/mean_recall_at_1"] == pytest.approx(data.validate(model)["mean_recall_at_1"])
    # the teacher's plan on the unpaired data (the batch of 256 holds all of it), partners by concept
    reference = plan_accuracy(
        model.teacher.project_images(data.unpaired_images),
        model.teacher.project_texts(data.unpaired_texts),
        data.unpaired_image_labels,
        data.unpaired_text_labels,
        epsilon=config.eps_teacher,
    )
    diagnostic = data.plan_diagnostic(config)
    for key, value in reference.items():
        assert diagnostic[f"diagnostic/{key}"] == pytest.approx(value, abs=1e-4), key
    chance = (data.unpaired_image_labels[:, None] == data.unpaired_text_labels[None, :]).mean()
    assert diagnostic["diagnostic/chance_mass_on_partners"] == pytest.approx(100 * chance)
    with pytest.raises(ValueError, match="data.val_split: null holds out single images"):
        load_data(tiny_experiment(tiny_store, val_split=None), ids)


def test_unpaired_images_of_another_iconify_dataset_pair_by_concept_name(tiny_store):
    tiny, ids = tiny_store.dataset, tiny_store.ids
    data = load_data(tiny_experiment(tiny_store, unpaired_images="tiny-mono:pool", n_unpaired=12), ids)
    assert len(data.unpaired_images) == 12 and len(data.unpaired_texts) == 12
    assert set(data.unpaired_image_labels) <= set(tiny.image_concept[tiny.splits["pool"]])  # mono's concepts, by name
    diagnostic = data.plan_diagnostic(
        tiny_experiment(tiny_store).config()
    )  # emoji captions and mono images of one concept are partners
    chance = (data.unpaired_image_labels[:, None] == data.unpaired_text_labels[None, :]).mean()
    assert 0 < chance and diagnostic["diagnostic/chance_mass_on_partners"] == pytest.approx(100 * chance)
