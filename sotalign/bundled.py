"""The bundled benchmark: OpenMoji retrieval and digits zero-shot over a grid of pair budgets.

Pairs come from the OpenMoji pool (image + its first caption); every other pool item gives
one unpaired image and one unpaired caption (independent permutations, no hidden pairing);
a fixed set of pool items is held out for validation (model selection). Each trained model is
scored on the OpenMoji test split (all captions, several per image) and zero-shot on the
digits test split (class prompts averaged over templates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sotalign.config import AlignConfig
from sotalign.data.budgets import Budget, sample_budget
from sotalign.data.extract import embed_dataset, read_table, table_dir
from sotalign.data.registry import load_dataset
from sotalign.data.views import ClassificationView, RetrievalView, classification_view, retrieval_view
from sotalign.encoders import Encoder
from sotalign.evaluation import retrieval, zero_shot
from sotalign.trainer import fit

N_VAL = 200  # pool items held out for model selection
VAL_SEED = 12345  # the validation items do not change with the budget seed


@dataclass
class BundledData:
    pool: RetrievalView
    test: RetrievalView
    digits: ClassificationView


def ensure_embedded(store: str | Path, image_encoder: Encoder, text_encoder: Encoder, progress: bool = True) -> None:
    """Embed the splits the benchmark reads (a no-op for tables already in the store)."""
    for name, splits in (("openmoji", ("pool", "test")), ("digits", ("test",))):
        dataset = load_dataset(name)
        for split in splits:
            for encoder in (image_encoder, text_encoder):
                embed_dataset(dataset, split, encoder, store, progress=progress)


def load_bundled(store: str | Path, image_encoder_id: str, text_encoder_id: str) -> BundledData:
    def table(dataset: str, split: str, modality: str, encoder_id: str):
        return read_table(table_dir(store, dataset, split, modality, encoder_id))

    def view(split: str) -> RetrievalView:
        return retrieval_view(table("openmoji", split, "image", image_encoder_id), table("openmoji", split, "text", text_encoder_id))

    digits = classification_view(table("digits", "test", "image", image_encoder_id), table("digits", "classes", "text", text_encoder_id))
    return BundledData(view("pool"), view("test"), digits)


def evaluate(model, data: BundledData) -> dict[str, float]:
    scores = retrieval(model.encode_image(data.test.images), model.encode_text(data.test.captions), data.test.caption_image)
    digits = zero_shot(model.encode_image(data.digits.images), data.digits.labels,
                       model.encode_text(data.digits.class_prompts.flatten(0, 1)).unflatten(0, data.digits.class_prompts.shape[:2]))
    return {**scores, "digits_top1": digits["top1"]}


def run_budget_grid(
    data: BundledData,
    methods: dict[str, AlignConfig],
    n_pairs_grid: Iterable[int],
    seeds: Iterable[int] = (0, 1, 2),
    progress: Callable[[str], None] | None = None,
    on_result: Callable[[object, dict], None] | None = None,
) -> list[dict]:
    """One row per (n_pairs, seed, method) with the test metrics and the wall time.

    ``on_result(model, row)`` sees every trained model (the orchestrator logs it to MLflow).
    """
    order = np.random.default_rng(VAL_SEED).permutation(len(data.pool.images))
    val, budget_pool = np.sort(order[:N_VAL]), np.sort(order[N_VAL:])
    pool_images, pool_texts = data.pool.images[budget_pool], data.pool.first_captions[budget_pool]
    validation = (data.pool.images[val], data.pool.first_captions[val])
    rows = []
    for n_pairs in n_pairs_grid:
        left = len(budget_pool) - n_pairs
        for seed in seeds:
            budget = sample_budget(len(budget_pool), Budget(n_pairs, left, left, seed))
            for name, config in methods.items():
                start = time.perf_counter()
                model = fit(
                    pool_images[budget.pairs], pool_texts[budget.pairs],
                    pool_images[budget.unpaired_images], pool_texts[budget.unpaired_texts],
                    config.replace(seed=seed), validation=validation,
                )
                metrics = evaluate(model, data)
                rows.append({"method": name, "n_pairs": n_pairs, "n_unpaired": left, "seed": seed,
                             "seconds": time.perf_counter() - start, **metrics})
                if on_result is not None:
                    on_result(model, rows[-1])
                if progress is not None:
                    progress(f"n_pairs {n_pairs:>5} seed {seed} {name:<9} openmoji mean R@1 {metrics['mean_recall_at_1']:5.2f}  digits top-1 {metrics['digits_top1']:5.1f}")
    return rows
