"""Iconify datasets: npm fetch and cache, rendering, caption rules, the concept split, the store.

One small real set (emojione, 0.7 MB) is packed with npm once per test session; the tests that
need it skip where npm is absent. The large sets are never fetched. Rules that need several
sets use small in-memory sets (``make_set``) or a second copy of the real one. Experiments on
Iconify data (the validation split, the unpaired captions, the hidden pairing, ``sotalign train``
with the shipped experiment file) run on a store of a few dozen of its concepts.
"""

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from sotalign.data.extract import embed_dataset, read_table
from sotalign.data.iconify import build_dataset, concept_split, load_iconify, load_set, pack_set, render_icon
from sotalign.data.iconify.dataset import TEST_FRACTION, VALIDATION_FRACTION, collect_images, resolve
from sotalign.data.iconify.fetch import PINNED_VERSIONS, IconSet
from sotalign.data.iconify.names import caption, parse_name
from sotalign.data.views import retrieval_view
from sotalign.encoders import DEFAULT_TEXT_ENCODER, load_encoder
from sotalign.evaluation import plan_accuracy
from sotalign.experiments.experiment import Experiment, load_data

SMALL_SET = "emojione"  # the smallest pinned set with aliases, skin tones and flags (1834 icons)
IMAGE = "packaged:efficientnet-lite0?image_size=32"  # seconds on a CPU; the text encoder is the real default (MiniLM)
ROOT = Path(__file__).resolve().parents[2]


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
    return load_set(SMALL_SET, npm_cache)


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
    assert small_set.prefix == SMALL_SET and small_set.version == PINNED_VERSIONS[SMALL_SET]
    assert small_set.licence == "CC-BY-4.0" and small_set.author == "Emoji One" and len(small_set.icons) > 1000
    monkeypatch.setenv("PATH", "")  # a cached set needs no npm
    assert load_set(SMALL_SET, npm_cache).icons.keys() == small_set.icons.keys()


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
    folders = [embed_dataset(d, "all", e, tmp_path, progress=False) for e in (image_encoder, text_encoder)]
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


def test_embed_cli_uses_the_store_cache_and_reruns_nothing(npm_cache, tmp_path, tiny_bert_dir, capsys, monkeypatch):
    store = tmp_path / "store"
    (store / "_npm").mkdir(parents=True)
    shutil.copy(next(npm_cache.glob(f"{SMALL_SET}@*.tgz")), store / "_npm")
    monkeypatch.setenv("PATH", "")  # cached in the store: no npm needed
    args = [
        "embed",
        "--dataset",
        f"iconify:{SMALL_SET}",
        "--split",
        "validation",
        "--out",
        str(store),
        "--encoder",
        f"hf:{tiny_bert_dir}",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "iconify-emojione/validation text:" in first
    folder = next(store.glob("iconify-emojione/validation/text/*"))
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    monkeypatch.setattr(
        "orchestrator.embed.load_encoder", lambda *a, **k: pytest.fail("a complete table's encoder was loaded")
    )
    assert main(args) == 0 and capsys.readouterr().out == first
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_bad_set_names_and_missing_npm_are_one_clear_error(tmp_path, capsys, monkeypatch):
    def error(dataset):
        assert main(["embed", "--dataset", dataset, "--out", str(tmp_path / "store")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    assert "bad Iconify icon set name 'Bad_Set'" in error("iconify:Bad_Set")
    with pytest.raises(ValueError, match="names an icon set twice"):
        resolve("iconify:twemoji,twemoji")
    with pytest.raises(ValueError, match="unknown Iconify dataset 'iconify-nope'"):
        load_iconify("iconify-nope", tmp_path)
    if shutil.which("npm") is not None:
        assert "unknown Iconify icon set 'no-such-set-xyz'" in error("iconify:no-such-set-xyz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    assert "npm" in error("iconify:twemoji") and "'twemoji'" in error("iconify:twemoji")


@pytest.fixture(scope="module")
def tiny_store(small_set, tmp_path_factory):
    """``tiny``: 24 pool, 3 validation and 4 test concepts of the small set, each in two styles (the set
    and a copy), split by concept as the real datasets are; ``tiny-mono``: the same concepts in a third
    style, alone (its pool a source of unpaired images with concepts). Embedded at 32 px + MiniLM."""
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
        IMAGE: load_encoder(IMAGE, device="cpu"),
        DEFAULT_TEXT_ENCODER: load_encoder(DEFAULT_TEXT_ENCODER, device="cpu"),
    }
    for dataset, splits in ((tiny, tiny.splits), (mono, ["pool"])):
        for split in splits:
            for encoder in encoders.values():
                embed_dataset(dataset, split, encoder, root, progress=False)
    return root, {spec: e.id for spec, e in encoders.items()}, tiny


def tiny_experiment(root, **data):
    return Experiment.from_dict(
        {
            "data": {
                "dataset": "tiny",
                "store": str(root),
                "image_encoder": IMAGE,
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
    root, ids, tiny = tiny_store
    experiment = tiny_experiment(root)
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
        load_data(tiny_experiment(root, val_split=None), ids)


def test_unpaired_images_of_another_iconify_dataset_pair_by_concept_name(tiny_store):
    root, ids, tiny = tiny_store
    data = load_data(tiny_experiment(root, unpaired_images_from="tiny-mono:pool", n_unpaired=12), ids)
    assert len(data.unpaired_images) == 12 and len(data.unpaired_texts) == 12
    assert set(data.unpaired_image_labels) <= set(tiny.image_concept[tiny.splits["pool"]])  # mono's concepts, by name
    diagnostic = data.plan_diagnostic(
        tiny_experiment(root).config()
    )  # emoji captions and mono images of one concept are partners
    chance = (data.unpaired_image_labels[:, None] == data.unpaired_text_labels[None, :]).mean()
    assert 0 < chance and diagnostic["diagnostic/chance_mass_on_partners"] == pytest.approx(100 * chance)


def test_train_the_shipped_iconify_experiment_on_a_tiny_store(tiny_store, tmp_path, monkeypatch):
    """`sotalign train search_spaces/experiments/iconify.yaml`, on the tiny store: the run logs the plan
    diagnostic and the SSW distance before training, the validation and the test metrics after."""
    root, _, _ = tiny_store
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    changes = {
        "data.dataset": "tiny",
        "data.store": str(root),
        "data.image_encoder": IMAGE,
        "data.n_pairs": 8,
        "steps": 4,
        "eval_every": 2,
        "log_every": 2,
        "head_dim": 8,
    }
    args = ["train", str(ROOT / "search_spaces/experiments/iconify.yaml"), "--tracking-uri", uri]
    assert main(args + [item for key, value in changes.items() for item in ("--set", f"{key}={value}")]) == 0
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("iconify").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "tiny"
    assert {
        "diagnostic/plan_mass_on_partners",
        "diagnostic/plan_argmax_on_partners",
        "diagnostic/chance_mass_on_partners",
        "ssw/total",
        "val/mean_recall_at_1",
        "mean_recall_at_1",
    } <= set(run.data.metrics)
