"""One experiment as data: which embeddings (dataset, encoders, budget), which method, which
``AlignConfig``; and the splits it trains, selects its model and is scored on.

This is what ``sotalign train CONFIG.yaml`` runs and what a sweep varies. It is plain data
(``Experiment.from_dict`` names every unknown key) so that a YAML file, a ``--set`` override
and a sampled trial all go through the same checks. ``method`` is any of ``sotalign.methods``:
SOTAlign, its references (``teacher``, ``sail``) and the paper's baselines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.data import fs
from sotalign.data.budgets import Budget, sample_budget
from sotalign.data.sources import MODALITIES, Source, SourceRef, check_source, parse_refs, read_source, subsample
from sotalign.data.synthetic import make_synthetic
from sotalign.data.views import ClassificationView, RetrievalView, pairs_view
from sotalign.encoders import DEFAULT_TEXT_ENCODER
from sotalign.evaluation import plan_accuracy
from sotalign.experiments.bundled import DEMO_IMAGE_ENCODER, N_VAL, VAL_SEED, digits_view, evaluate_views, stored_view
from sotalign.experiments.distances import distribution_shift
from sotalign.fields import check_fields, from_mapping, option
from sotalign.methods import METHODS
from sotalign.stage2 import batch_sizes
from sotalign.teachers import checked_teacher_dim
from sotalign.two_stage import checked_inputs, fit, fit_stage1, teacher_dim

DIAGNOSTIC_BATCH = 4096  # plan_accuracy's plan is dense: 4096 x 4096 float32 is 64 MiB (our cap, not the paper's)


@dataclass
class DataSpec:
    """Where an experiment's data comes from: one captioned pool whose pairing is hidden for all but
    ``n_pairs`` items (the paper's simulated budgets: ``dataset`` + ``pool_split``), or separate
    sources of real data (``pairs``, ``unpaired_images``, ``unpaired_texts``, ``validation``,
    ``test``: each ``DATASET:SPLIT`` of the store, ``sotalign.data.sources``)."""

    dataset: str = "openmoji"  # the bundled retrieval benchmark (+ digits zero-shot), README; or synthetic, or yours
    store: str = "demo_output/store"  # the embedding store `sotalign demo` fills (a folder or s3://BUCKET/PREFIX)
    image_encoder: str = DEMO_IMAGE_ENCODER  # packaged EfficientNet-Lite0 at 128 px (docs/notes/assets.md)
    text_encoder: str = DEFAULT_TEXT_ENCODER  # packaged all-MiniLM-L6-v2
    n_pairs: int | None = option(
        300, minimum=2
    )  # a low-supervision budget of the bundled benchmark (README); None = every row of data.pairs
    n_unpaired: int | None = option(
        None, minimum=0
    )  # unpaired images and texts each (texts of a dataset with concepts: at most its distinct captions); None = all
    n_val: int = option(
        N_VAL, minimum=2
    )  # with no validation split or source: pairs held out for model selection (paper: selection on a validation split)
    pool_split: str = (
        "pool"  # the split that supplies pairs, unpaired data and (without val_split) validation (the bundled name)
    )
    val_split: str | None = (
        None  # a validation split (iconify-*: validation); None = hold out n_val pool items (the bundled ones have none)
    )
    test_split: str | None = "test"  # scored split of the pool's dataset; None = hold out n_test pool items instead
    n_test: int = 400  # with no test split or source: the size of the bundled test split
    pairs: str | None = None  # "DATASET:SPLIT" of real pairs; None = draw them from the pool (dataset + pool_split)
    unpaired_images: list[str] | str | None = (
        None  # "DATASET:SPLIT" (or a list) of images without captions; None = the pool's leftovers (none with pairs)
    )
    unpaired_texts: list[str] | str | None = (
        None  # "DATASET:SPLIT" (or a list) of texts without images; None = the pool's leftovers (none with pairs)
    )
    validation: str | None = None  # "DATASET:SPLIT" of pairs for model selection; None = val_split, else n_val held out
    test: str | None = None  # "DATASET:SPLIT" of the scored pairs; None = test_split (pool only), else n_test held out

    def __post_init__(self) -> None:
        check_fields(self, prefix="data.")
        fs.check_no_credentials(self.store, "data.store")
        if not self.dataset or "/" in self.dataset:
            raise InputError(
                f"data.dataset must be openmoji, synthetic or the name of an embedded dataset, got {self.dataset!r}"
            )
        if self.pairs is not None:
            self.dataset = SourceRef.parse(self.pairs, "data.pairs").dataset  # what tags and galleries name
        elif self.n_pairs is None:
            raise InputError("data.n_pairs: null (every pair) needs data.pairs, a source of real pairs")
        if self.test_ref() is None and self.n_test < 2:
            raise InputError(f"data.n_test must be >= 2 without a test split or source, got {self.n_test}")
        unpaired = self.unpaired_refs()
        if self.pairs is not None and bool(unpaired["image"]) != bool(unpaired["text"]):
            given, missing = ("images", "texts") if unpaired["image"] else ("texts", "images")
            raise InputError(
                f"data.unpaired_{given} is set but not data.unpaired_{missing}: with data.pairs, unpaired data "
                f"comes only from the sources named, and the unpaired term needs both images and texts"
            )
        self._refuse_overlaps(unpaired)

    def _refuse_overlaps(self, unpaired: dict[str, list[SourceRef]]) -> None:
        """Evaluation data is never trained on: no training source is the validation or the test data."""
        held_out = {"data.validation": self.validation_ref(), "data.test": self.test_ref()}
        if held_out["data.test"] is not None and held_out["data.validation"] == held_out["data.test"]:
            raise InputError(
                f"data.validation and data.test both name {held_out['data.test']}: the model would be selected "
                "on the data it is scored on (name another validation split, or hold n_val pairs out)"
            )
        training = {("data.pairs" if self.pairs else "data.pool_split"): [self.pairs_ref()]}
        training.update({f"data.unpaired_{m}s": refs for m, refs in unpaired.items()})
        if self.dataset == "openmoji":  # the bundled benchmark also scores digits zero-shot
            held_out["the digits zero-shot test (its images)"] = SourceRef("digits", "test")
            held_out["the digits zero-shot test (its class prompts)"] = SourceRef("digits", "classes")
        for name, refs in training.items():
            for held_name, held in held_out.items():
                if held is not None and held in refs:
                    raise InputError(f"{name} names {held}, which is {held_name} (evaluation data, never trained on)")

    def pairs_ref(self) -> SourceRef:
        """The table the pairs come from: data.pairs, or the pool."""
        return SourceRef.parse(self.pairs, "data.pairs") if self.pairs else SourceRef(self.dataset, self.pool_split)

    def validation_ref(self) -> SourceRef | None:
        """The validation source; None = n_val pairs held out of the pairs' table."""
        if self.validation is not None:
            return SourceRef.parse(self.validation, "data.validation")
        return SourceRef(self.dataset, self.val_split) if self.val_split and self.pairs is None else None

    def test_ref(self) -> SourceRef | None:
        """The test source; None = n_test pairs held out of the pairs' table."""
        if self.test is not None:
            return SourceRef.parse(self.test, "data.test")
        return SourceRef(self.dataset, self.test_split) if self.test_split and self.pairs is None else None

    def unpaired_refs(self) -> dict[str, list[SourceRef]]:
        """modality -> the tables its unpaired data is read from ([] = the pool's leftovers, or none with pairs)."""
        return {
            "image": parse_refs(self.unpaired_images, "data.unpaired_images"),
            "text": parse_refs(self.unpaired_texts, "data.unpaired_texts"),
        }

    def tables(self) -> list[tuple[str, SourceRef, str]]:
        """(setting, source, modality) of every embedded table the experiment reads (synthetic: none)."""
        if self.dataset == "synthetic":
            return []
        both = [("data.pairs" if self.pairs else "data.pool_split", self.pairs_ref())]
        both += [
            (name, ref) for name, ref in (("data.validation", self.validation_ref()), ("data.test", self.test_ref()))
        ]
        listed = [(name, ref, modality) for name, ref in both if ref is not None for modality in MODALITIES]
        for modality, refs in self.unpaired_refs().items():
            listed += [(f"data.unpaired_{modality}s", ref, modality) for ref in refs]
        return listed

    def source_tags(self) -> dict[str, str]:
        """One MLflow tag per source (``source/pairs`` ...): what a run read, for comparing runs in the UI."""
        unpaired = self.unpaired_refs()
        pool = "" if self.pairs else " (pairing hidden)"
        leftovers = "none" if self.pairs else f"{self.pairs_ref()} leftovers"
        held_out = f"held out of {self.pairs_ref()}"
        return {
            "source/pairs": f"{self.pairs_ref()}{pool}",
            "source/unpaired_images": ", ".join(map(str, unpaired["image"])) or leftovers,
            "source/unpaired_texts": ", ".join(map(str, unpaired["text"])) or leftovers,
            "source/validation": str(self.validation_ref() or held_out),
            "source/test": str(self.test_ref() or held_out),
        }

    @property
    def encoder_pair(self) -> str:
        return f"{self.image_encoder} + {self.text_encoder}"

    def family(self) -> str:
        """The runs this data makes comparable: its dataset, and the test data's where that is another
        dataset's. An unnamed experiment logs to it, so that runs on a user's data, the bundled benchmark
        and a sweep (named after itself) never share an MLflow experiment that ``compare`` ranks."""
        test = self.test_ref()
        return self.dataset if test is None or test.dataset == self.dataset else f"{self.dataset}-test-{test.dataset}"


@dataclass
class Experiment:
    name: str | None = None  # the MLflow experiment; None = the data's family (DataSpec.family), docs/DESIGN.md
    method: str = option("sotalign", choices=METHODS)  # the paper's method, or a reference/baseline (sotalign.methods)
    seed: int = 0  # draws the budget and seeds training
    data: DataSpec = field(default_factory=DataSpec)
    align: AlignConfig = field(default_factory=AlignConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.name is None:
            self.name = self.data.family()
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"name (the MLflow experiment) must be a non-empty string, got {self.name!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        """Build from nested mappings (``data:``, ``align:``), naming unknown or misplaced keys.

        ``data.encoder_pair: "IMAGE_SPEC + TEXT_SPEC"`` sets both encoders at once (one
        categorical choice in a sweep).
        """
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(
                f"unknown experiment key(s): {', '.join(unknown)}; expected name, method, seed, data, align"
            )
        for section in ("data", "align"):
            if not isinstance(values.get(section) or {}, dict):
                raise InputError(f"{section} must be a mapping of keys, got {values[section]!r}")
        data = dict(values.pop("data", None) or {})
        if "encoder_pair" in data:
            image, sep, text = str(data.pop("encoder_pair")).partition(" + ")
            if not sep:
                raise InputError(f"data.encoder_pair must read 'IMAGE_SPEC + TEXT_SPEC', got {image!r}")
            data.update(image_encoder=image.strip(), text_encoder=text.strip())
        align_values = values.pop("align", None) or {}
        if "method" in align_values:
            raise InputError("method is an experiment key: write `method: ...` at the top level, not under align")
        align = AlignConfig.from_dict(align_values)
        return cls(**values, data=from_mapping(DataSpec, data, "data"), align=align)

    def to_dict(self) -> dict[str, Any]:
        align = {k: v for k, v in self.align.to_dict().items() if k != "method"}  # the top-level method is the one
        return {
            "name": self.name,
            "method": self.method,
            "seed": self.seed,
            "data": dataclasses.asdict(self.data),
            "align": align,
        }

    def config(self) -> AlignConfig:
        """The ``AlignConfig`` that trains this experiment's method with its seed."""
        return self.align.replace(seed=self.seed, method=self.method).with_method_preset()

    def tags(self) -> dict[str, str]:
        """The run tags of docs/DESIGN.md (``n_unpaired`` is filled in once the data is known)."""
        config = self.config()
        return {
            "vision_encoder": self.data.image_encoder,
            "text_encoder": self.data.text_encoder,
            "encoder_pair": self.data.encoder_pair,
            "method": self.method,
            "teacher": config.teacher,
            "divergence": config.divergence if config.uses_unpaired else "none",
            "dataset": self.data.dataset,
            "n_pairs": str(self.data.n_pairs),
            **self.data.source_tags(),
        }


@dataclass
class ExperimentData:
    """Training inputs of ``sotalign.fit`` and the held-out views it selects its model on and is scored on.

    Where the unpaired data's hidden pairing is known, ``unpaired_image_labels[i] ==
    unpaired_text_labels[j]`` says that unpaired image i and text j are partners: the same pool
    item (its image and its first caption), or the same concept (by name, so across datasets too).
    """

    paired_images: torch.Tensor
    paired_texts: torch.Tensor
    unpaired_images: torch.Tensor | None  # None with a budget of 0 unpaired samples (SAIL needs none)
    unpaired_texts: torch.Tensor | None
    validation: RetrievalView  # held-out pairs, or a validation split with all its captions and concepts
    test: RetrievalView
    zero_shot: ClassificationView | None = None  # digits for the bundled benchmark
    unpaired_image_labels: np.ndarray | None = None  # None = the pairing is unknown (synthetic data, digits)
    unpaired_text_labels: np.ndarray | None = None
    _stage1: tuple[AlignConfig, object] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unpaired_images is not None and len(self.unpaired_images) == 0:
            self.unpaired_images = self.unpaired_texts = self.unpaired_image_labels = self.unpaired_text_labels = None

    @property
    def n_unpaired(self) -> int:
        return 0 if self.unpaired_images is None else len(self.unpaired_images)

    def distribution_shift(self) -> dict[str, float]:
        """SSW distances between the unpaired and the paired embeddings (paper eq. 14); {} without unpaired data."""
        if self.unpaired_images is None:
            return {}
        return distribution_shift(self.paired_images, self.paired_texts, self.unpaired_images, self.unpaired_texts)

    def fit(self, config: AlignConfig, **options):
        """``sotalign.fit`` on this budget: its pairs, unpaired data and validation view; ``options`` are
        fit's keywords (``teacher``, ``callback``, ``distributed``, ``checkpointing``)."""
        return fit(
            self.paired_images,
            self.paired_texts,
            self.unpaired_images,
            self.unpaired_texts,
            config,
            validation=self.validation,
            **options,
        )

    def evaluate(self, model) -> dict[str, float]:
        """Test retrieval (I2T/T2I R@1/5/10, several captions per image) and zero-shot top-1."""
        return evaluate_views(model, self.test, self.zero_shot)

    def validate(self, model) -> dict[str, float]:
        """Validation retrieval, scored as the test is (the model selection's metric)."""
        return evaluate_views(model, self.validation)

    def stage1(self, config: AlignConfig):
        """The stage-1 teacher ``sotalign.fit`` trains against with ``config`` on this budget (what its
        ``teacher=`` takes, so that a run that also needs it for ``plan_diagnostic`` fits it once).
        Kept for the last config asked: the driver's pre-flight and the run it starts share one fit."""
        if self._stage1 is not None and self._stage1[0] == config:
            return self._stage1[1]
        a, b, x, y, _ = checked_inputs(
            self.paired_images, self.paired_texts, self.unpaired_images, self.unpaired_texts, None, config
        )
        teacher = fit_stage1(a, b, x, y, config)
        self._stage1 = (config, teacher)
        return teacher

    def preflight(self, config: AlignConfig):
        """Every input check of a run with ``config``, made here and now: on the driver, before Ray
        Train or an MLflow run starts, so that bad input is one error, never a worker's failure that
        Train retries. Returns the stage-1 teacher where it is a closed form (milliseconds to fit;
        the workers receive it), else None (ASIF has none; the contrastive one is trained, and only
        its dimension is checked here)."""
        a, b, x, y, _ = checked_inputs(
            self.paired_images, self.paired_texts, self.unpaired_images, self.unpaired_texts, None, config
        )
        if config.method == "asif":
            return None
        if config.teacher == "contrastive":
            dims = (a.shape[1], b.shape[1], a.shape[0])
            checked_teacher_dim(teacher_dim(config, *dims), *dims, config.center != "none")
            return None
        return self.stage1(config)

    def plan_diagnostic(self, config: AlignConfig, teacher=None) -> dict[str, float]:
        """How much of the teacher's OT plan on an unpaired batch falls on true partners, in percent:
        ``diagnostic/plan_mass_on_partners``, ``diagnostic/plan_argmax_on_partners`` and
        ``diagnostic/chance_mass_on_partners`` (``sotalign.evaluation.plan_accuracy``); {} where the
        pairing is unknown or the batch holds no partners.

        The teacher is ``teacher``, or when None the one ``sotalign.fit`` trains against with
        ``config`` (``stage1``: a closed form, or for the contrastive teacher a SAIL run); the plan is
        solved at ``config.eps_teacher`` on the teacher's projections, as the KLOT term solves it,
        for a batch of the run's unpaired batch size (at most ``DIAGNOSTIC_BATCH``) drawn with its seed.
        """
        image_labels, text_labels = self.unpaired_image_labels, self.unpaired_text_labels
        if image_labels is None or text_labels is None or image_labels.dtype.kind != text_labels.dtype.kind:
            return {}  # no pairing, or an item number on one side and a concept name on the other
        a, b, x, y, _ = checked_inputs(
            self.paired_images, self.paired_texts, self.unpaired_images, self.unpaired_texts, None, config
        )
        _, n_images, n_texts = batch_sizes(config, len(a), len(x), len(y))
        rng = np.random.default_rng(config.seed)
        images = rng.permutation(len(x))[: min(n_images, DIAGNOSTIC_BATCH)]
        texts = rng.permutation(len(y))[: min(n_texts, DIAGNOSTIC_BATCH)]
        if not np.isin(image_labels[images], text_labels[texts]).any():
            return {}
        teacher = teacher or self.stage1(config)
        with torch.no_grad():
            scores = plan_accuracy(
                teacher.project_images(x[images]),
                teacher.project_texts(y[texts]),
                image_labels[images],
                text_labels[texts],
                epsilon=config.eps_teacher,
                n_iter=config.n_iter,
            )
        return {f"diagnostic/{name}": value for name, value in scores.items()}


def load_data(experiment: Experiment, encoder_ids: dict[str, str] | None = None) -> ExperimentData:
    """Draw the experiment's budget (deterministic in its seed) from its sources.

    ``encoder_ids`` maps encoder specs to the ids their tables are stored under (what
    ``encoder_id(spec)`` says); it is not needed for the synthetic dataset. Pairs are rows of the
    pairs' table (``data.pairs``, or the pool) with their first caption (their concept's, for a
    dataset with concepts); validation and test are their own sources, or pairs held out of that
    table. Unpaired images and texts come from the sources named (``sotalign.data.sources``), or
    in the one-pool mode from the pool's leftovers: other pool images and, for a dataset with
    concepts, the pool's distinct captions other than the paired ones, else the first captions of
    other pool items (drawn independently of the images, so neither order carries the pairing).
    """
    spec = experiment.data
    if spec.dataset == "synthetic":
        n_unpaired = 4000 if spec.n_unpaired is None else spec.n_unpaired  # make_synthetic's default pool
        bench = make_synthetic(spec.n_pairs, max(n_unpaired, 1), spec.n_val, seed=experiment.seed)
        test = RetrievalView(bench.test_images, bench.test_texts, bench.test_texts, np.arange(len(bench.test_texts)))
        return ExperimentData(
            bench.paired_images,
            bench.paired_texts,
            bench.unpaired_images[:n_unpaired],
            bench.unpaired_texts[:n_unpaired],
            pairs_view(bench.val_images, bench.val_texts),
            test,
        )

    ids = encoder_ids or {}
    missing = [s for s in (spec.image_encoder, spec.text_encoder) if s not in ids]
    if missing:
        raise InputError(f"no stored encoder id for {', '.join(missing)} (embed the dataset first)")
    image_id, text_id = ids[spec.image_encoder], ids[spec.text_encoder]
    encoder_of = {"image": image_id, "text": text_id}
    for setting, ref, modality in spec.tables():  # one clear error for a missing or mismatched table
        check_source(spec.store, ref, modality, encoder_of[modality], setting)
    source, val_ref, test_ref = spec.pairs_ref(), spec.validation_ref(), spec.test_ref()
    setting = "data.pairs" if spec.pairs else "data.pool_split"
    pool = stored_view(spec.store, source.dataset, source.split, image_id, text_id)
    grouped = pool.image_group is not None
    for key, ref, what in (("test", test_ref, "test"), ("val", val_ref, "validation")):
        name, named = (f"data.{what}", "DATASET:SPLIT") if spec.pairs else (f"data.{key}_split", what)
        if ref is None and grouped:
            raise InputError(
                f"{name}: null holds out single images, but {source} draws each concept in several styles, "
                f"so held-out concepts would leak into training; name its {what} split ({name}: {named})"
            )
    n_items, n_val, n_test = len(pool.images), 0 if val_ref else spec.n_val, 0 if test_ref else spec.n_test
    held_out = n_val + n_test
    n_pairs = n_items - held_out if spec.n_pairs is None else spec.n_pairs
    if held_out + n_pairs > n_items or n_pairs < 2:
        terms = "data.n_pairs" + (" + data.n_val" if n_val else "") + (" + data.n_test" if n_test else "")
        raise InputError(
            f"{terms} = {held_out + n_pairs} exceeds the {n_items} items of {source} ({setting})"
            if n_pairs >= 2
            else f"data.n_val + data.n_test = {held_out} leave {n_pairs} of the {n_items} items of {source} as pairs"
        )
    order = np.random.default_rng(VAL_SEED).permutation(n_items)  # validation (and test) items never change
    val, budget_pool = np.sort(order[:n_val]), np.sort(order[held_out:])
    refs = spec.unpaired_refs()
    from_pool = spec.pairs is None  # the one-pool mode: unpaired data not named comes from its leftovers
    if not from_pool and not refs["image"] and spec.n_unpaired:
        raise InputError(
            f"data.n_unpaired = {spec.n_unpaired}, but no unpaired source is named: with data.pairs, set "
            "data.unpaired_images and data.unpaired_texts (DATASET:SPLIT of the store)"
        )
    left = len(budget_pool) - n_pairs
    n_unpaired = left if spec.n_unpaired is None else spec.n_unpaired
    n_item_images = n_unpaired if from_pool and not refs["image"] else 0
    n_item_texts = n_unpaired if from_pool and not refs["text"] and not grouped else 0
    rows = sample_budget(len(budget_pool), Budget(n_pairs, n_item_images, n_item_texts, experiment.seed))
    pairs = budget_pool[rows.pairs]
    if refs["image"]:
        unpaired = _from_sources(spec, refs["image"], "image", image_id, experiment.seed)
        unpaired_images, image_labels = unpaired.embeddings, unpaired.labels
    elif from_pool:
        items = budget_pool[rows.unpaired_images]
        unpaired_images, image_labels = pool.images[items], _item_labels(pool, items)
    else:
        unpaired_images = image_labels = None
    if refs["text"]:
        unpaired = _from_sources(spec, refs["text"], "text", text_id, experiment.seed)
        unpaired_texts, text_labels = unpaired.embeddings, unpaired.labels
    elif from_pool and grouped:
        captions = _unpaired_captions(pool, pairs, spec.n_unpaired, experiment.seed)
        unpaired_texts, text_labels = (
            pool.captions[captions],
            pool.group_names[pool.image_group[pool.caption_image[captions]]],
        )
    elif from_pool:
        items = budget_pool[rows.unpaired_texts]
        unpaired_texts, text_labels = pool.first_captions[items], items
    else:
        unpaired_texts = text_labels = None
    validation = (
        stored_view(spec.store, val_ref.dataset, val_ref.split, image_id, text_id)
        if val_ref
        else pairs_view(pool.images[val], pool.first_captions[val])
    )
    test = (
        stored_view(spec.store, test_ref.dataset, test_ref.split, image_id, text_id)
        if test_ref
        else _subview(pool, np.sort(order[n_val:held_out]))
    )
    return ExperimentData(
        pool.images[pairs],
        pool.first_captions[pairs],
        unpaired_images,
        unpaired_texts,
        validation,
        test,
        digits_view(spec.store, image_id, text_id) if spec.dataset == "openmoji" else None,
        image_labels,
        text_labels,
    )


def _item_labels(pool: RetrievalView, items: np.ndarray) -> np.ndarray:
    """Partner labels of pool images: their concept names, or without concepts the items themselves
    (an unpaired text of item i is item i's first caption)."""
    return items if pool.image_group is None else pool.group_names[pool.image_group[items]]


def _unpaired_captions(pool: RetrievalView, pairs: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Caption rows of a pool with concepts for the unpaired texts: its distinct captions but the
    paired ones (each pair's text is its concept's first caption, the lowest row of the concept),
    at most ``n`` (all when None), drawn with the budget's seed."""
    caption_group = pool.image_group[pool.caption_image]
    groups, first_rows = np.unique(caption_group, return_index=True)
    first_row = np.empty(int(pool.image_group.max()) + 1, dtype=np.int64)
    first_row[groups] = first_rows
    candidates = np.setdiff1d(np.arange(len(caption_group)), first_row[pool.image_group[pairs]])
    count = len(candidates) if n is None else min(n, len(candidates))
    return np.random.default_rng([seed, 2]).permutation(candidates)[:count]


def _from_sources(spec: DataSpec, refs: list[SourceRef], modality: str, encoder_id: str, seed: int) -> Source:
    """``spec.n_unpaired`` rows (all when None) of the named tables, drawn with the budget's seed."""
    field = f"data.unpaired_{modality}s"
    source = read_source(spec.store, refs, modality, encoder_id, field)
    if spec.n_unpaired is not None and spec.n_unpaired > len(source):
        names = ", ".join(map(str, refs))
        raise InputError(f"data.n_unpaired = {spec.n_unpaired} exceeds the {len(source)} {modality} rows of {names}")
    return subsample(source, spec.n_unpaired, seed, 1 if modality == "image" else 2)


def _subview(view: RetrievalView, items: np.ndarray) -> RetrievalView:
    """The images ``items`` of ``view`` with all of their captions."""
    keep = np.isin(view.caption_image, items)
    position = np.full(len(view.images), -1)
    position[items] = np.arange(len(items))
    return RetrievalView(
        view.images[items],
        view.first_captions[items],
        view.captions[torch.from_numpy(keep)],
        position[view.caption_image[keep]],
        image_ids=None if view.image_ids is None else view.image_ids[items],
        caption_ids=None if view.caption_ids is None else view.caption_ids[keep],
    )
