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
from sotalign.data.budgets import Budget, sample_budget
from sotalign.data.extract import read_table, table_dir
from sotalign.data.synthetic import make_synthetic
from sotalign.data.views import ClassificationView, RetrievalView, pairs_view
from sotalign.encoders import DEFAULT_TEXT_ENCODER
from sotalign.evaluation import plan_accuracy
from sotalign.experiments.bundled import DEMO_IMAGE_ENCODER, N_VAL, VAL_SEED, digits_view, evaluate_views, stored_view
from sotalign.experiments.distances import distribution_shift
from sotalign.fields import check_fields, from_mapping, option
from sotalign.methods import METHODS
from sotalign.stage2 import batch_sizes
from sotalign.two_stage import checked_inputs, fit, fit_stage1

DIAGNOSTIC_BATCH = 4096  # plan_accuracy's plan is dense: 4096 x 4096 float32 is 64 MiB (our cap, not the paper's)


@dataclass
class DataSpec:
    dataset: str = "openmoji"  # the bundled retrieval benchmark (+ digits zero-shot), README; or synthetic, or yours
    store: str = "demo_output/store"  # the embedding store `sotalign demo` fills
    image_encoder: str = DEMO_IMAGE_ENCODER  # packaged EfficientNet-Lite0 at 128 px (docs/assets.md)
    text_encoder: str = DEFAULT_TEXT_ENCODER  # packaged all-MiniLM-L6-v2
    n_pairs: int = option(300, minimum=2)  # a low-supervision budget of the bundled benchmark (README)
    n_unpaired: int | None = option(
        None, minimum=0
    )  # unpaired images and texts each (texts of a dataset with concepts: at most its distinct captions); None = all left over
    n_val: int = option(
        N_VAL, minimum=2
    )  # with val_split null: pool pairs held out for model selection (paper: selection on a validation split)
    pool_split: str = (
        "pool"  # the split that supplies pairs, unpaired data and (without val_split) validation (the bundled name)
    )
    val_split: str | None = (
        None  # a validation split (iconify-*: validation); None = hold out n_val pool items (the bundled ones have none)
    )
    test_split: str | None = "test"  # scored split; None = hold out n_test pool items instead
    n_test: int = 400  # with test_split None: the size of the bundled test split
    unpaired_images_from: str | None = None  # "DATASET:SPLIT" of the store (paper Table 7); None = the pool's leftovers
    unpaired_texts_from: str | None = None  # e.g. "digits:classes" (the digit prompts); None = the pool's leftovers

    def __post_init__(self) -> None:
        check_fields(self, prefix="data.")
        if not self.dataset or "/" in self.dataset:
            raise InputError(
                f"data.dataset must be openmoji, synthetic or the name of an embedded dataset, got {self.dataset!r}"
            )
        if self.test_split is None and self.n_test < 2:
            raise InputError(f"data.n_test must be >= 2 when data.test_split is null, got {self.n_test}")
        for name in ("unpaired_images_from", "unpaired_texts_from"):
            source = getattr(self, name)
            if source is not None and (source.count(":") != 1 or not all(source.split(":"))):
                raise InputError(f"data.{name} must read DATASET:SPLIT (e.g. digits:pool), got {source!r}")

    def unpaired_sources(self) -> dict[str, tuple[str, str]]:
        """modality -> (dataset, split) of the unpaired data taken from another embedded table."""
        sources = {"image": self.unpaired_images_from, "text": self.unpaired_texts_from}
        return {modality: tuple(source.split(":")) for modality, source in sources.items() if source}

    @property
    def encoder_pair(self) -> str:
        return f"{self.image_encoder} + {self.text_encoder}"


@dataclass
class Experiment:
    name: str = "openmoji"  # the MLflow experiment (one per benchmark, docs/DESIGN.md)
    method: str = option("sotalign", choices=METHODS)  # the paper's method, or a reference/baseline (sotalign.methods)
    seed: int = 0  # draws the budget and seeds training
    data: DataSpec = field(default_factory=DataSpec)
    align: AlignConfig = field(default_factory=AlignConfig)

    def __post_init__(self) -> None:
        check_fields(self)
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
        ``teacher=`` takes, so that a run that also needs it for ``plan_diagnostic`` fits it once)."""
        a, b, x, y, _ = checked_inputs(
            self.paired_images, self.paired_texts, self.unpaired_images, self.unpaired_texts, None, config
        )
        return fit_stage1(a, b, x, y, config)

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
    """Draw the experiment's budget (deterministic in its seed) from its dataset.

    ``encoder_ids`` maps encoder specs to the ids their tables are stored under (what
    ``encoder_id(spec)`` says); it is not needed for the synthetic dataset. Pairs are pool images
    with their first caption (their concept's, for a dataset with concepts). Unpaired images are
    other pool images; unpaired texts are, for a dataset with concepts, the pool's distinct
    captions other than the paired ones, else the first captions of other pool items (drawn
    independently of the images, so neither order carries the pairing).
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
    pool = stored_view(spec.store, spec.dataset, spec.pool_split, image_id, text_id)
    grouped = pool.image_group is not None
    for key, value, what in (("test_split", spec.test_split, "test"), ("val_split", spec.val_split, "validation")):
        if value is None and grouped:
            raise InputError(
                f"data.{key}: null holds out single images, but {spec.dataset} draws each concept in several "
                f"styles, so held-out concepts would leak into training; name its {what} split "
                f"(data.{key}: {what})"
            )
    n_items, n_val, n_test = (
        len(pool.images),
        0 if spec.val_split else spec.n_val,
        0 if spec.test_split else spec.n_test,
    )
    held_out = n_val + n_test
    if held_out + spec.n_pairs > n_items:
        terms = "data.n_pairs" + (" + data.n_val" if n_val else "") + (" + data.n_test" if n_test else "")
        raise InputError(
            f"{terms} = {held_out + spec.n_pairs} exceeds the {n_items} items of the {spec.dataset} "
            f"{spec.pool_split!r} split"
        )
    order = np.random.default_rng(VAL_SEED).permutation(n_items)  # validation (and test) items never change
    val, budget_pool = np.sort(order[:n_val]), np.sort(order[held_out:])
    left = len(budget_pool) - spec.n_pairs
    n_unpaired = left if spec.n_unpaired is None else spec.n_unpaired
    sources = spec.unpaired_sources()
    n_item_texts = 0 if "text" in sources or grouped else n_unpaired
    budget = Budget(spec.n_pairs, 0 if "image" in sources else n_unpaired, n_item_texts, experiment.seed)
    rows = sample_budget(len(budget_pool), budget)
    pairs = budget_pool[rows.pairs]
    if "image" in sources:
        unpaired_images, image_labels = _from_source(spec, sources["image"], "image", image_id, experiment.seed)
    else:
        items = budget_pool[rows.unpaired_images]
        unpaired_images, image_labels = pool.images[items], _item_labels(pool, items)
    if "text" in sources:
        unpaired_texts, text_labels = _from_source(spec, sources["text"], "text", text_id, experiment.seed)
    elif grouped:
        captions = _unpaired_captions(pool, pairs, spec.n_unpaired, experiment.seed)
        unpaired_texts, text_labels = (
            pool.captions[captions],
            pool.group_names[pool.image_group[pool.caption_image[captions]]],
        )
    else:
        items = budget_pool[rows.unpaired_texts]
        unpaired_texts, text_labels = pool.first_captions[items], items
    validation = (
        stored_view(spec.store, spec.dataset, spec.val_split, image_id, text_id)
        if spec.val_split
        else pairs_view(pool.images[val], pool.first_captions[val])
    )
    test = (
        stored_view(spec.store, spec.dataset, spec.test_split, image_id, text_id)
        if spec.test_split
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


def _from_source(
    spec: DataSpec, source: tuple[str, str], modality: str, encoder_id: str, seed: int
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``spec.n_unpaired`` rows (all when None) of another embedded table, drawn with the budget's seed,
    and their concept names as partner labels (None for a table without concepts)."""
    table = read_table(table_dir(spec.store, *source, modality, encoder_id))
    n = len(table.ids) if spec.n_unpaired is None else spec.n_unpaired
    if n > len(table.ids):
        raise InputError(f"data.n_unpaired = {n} exceeds the {len(table.ids)} {modality} rows of {':'.join(source)}")
    rows = np.sort(
        np.random.default_rng([seed, 1 if modality == "image" else 2]).choice(len(table.ids), n, replace=False)
    )
    concepts = table.columns.get("concept")
    return torch.as_tensor(table.embeddings)[torch.from_numpy(rows)], None if concepts is None else concepts.astype(
        str
    )[rows]


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
