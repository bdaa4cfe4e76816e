"""Data budgets: which rows are paired, which are unpaired images, which are unpaired texts.

A pool is a table of n image-text items (row i's image goes with row i's caption). The paired
set takes ``n_pairs`` items. Unpaired images and unpaired texts are drawn, each with its own
permutation, from the items left over, so their orders carry no pairing (as in the paper,
where both come from CC3M). ``disjoint_unpaired=True`` also keeps the two unpaired sets from
sharing any item. Unpaired data may come from another pool (``unpaired_image_pool`` /
``unpaired_text_pool`` = its size), e.g. digits images with OpenMoji pairs (paper Table 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sotalign.checks import InputError


@dataclass(frozen=True)
class Budget:
    n_pairs: int
    n_unpaired_images: int
    n_unpaired_texts: int
    seed: int = 0


@dataclass(frozen=True)
class BudgetRows:
    """Row indices: ``pairs`` into the paired pool; unpaired rows into their own pools."""

    pairs: np.ndarray
    unpaired_images: np.ndarray
    unpaired_texts: np.ndarray


def sample_budget(
    n_items: int,
    budget: Budget,
    *,
    unpaired_image_pool: int | None = None,
    unpaired_text_pool: int | None = None,
    disjoint_unpaired: bool = False,
) -> BudgetRows:
    """Draw a budget from a pool of ``n_items`` pairs; deterministic in ``budget.seed``."""
    for name in ("n_pairs", "n_unpaired_images", "n_unpaired_texts"):
        if getattr(budget, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(budget, name)}")
    if budget.n_pairs > n_items:
        raise InputError(f"n_pairs = {budget.n_pairs} exceeds the {n_items} items in the pool")
    rng = np.random.default_rng(budget.seed)
    order = rng.permutation(n_items)
    pairs, rest = np.sort(order[: budget.n_pairs]), order[budget.n_pairs :]

    same_pool = unpaired_image_pool is None and unpaired_text_pool is None
    if same_pool and disjoint_unpaired:
        need = budget.n_unpaired_images + budget.n_unpaired_texts
        if need > len(rest):
            raise InputError(
                f"n_unpaired_images + n_unpaired_texts = {need} exceeds the {len(rest)} items left "
                f"after {budget.n_pairs} pairs (pool of {n_items}, disjoint unpaired sets)"
            )
        images = rest[: budget.n_unpaired_images]
        texts = rng.permutation(rest[budget.n_unpaired_images : need])
        return BudgetRows(pairs, images, texts)

    def draw(count: int, pool: int | None, what: str) -> np.ndarray:
        candidates = rest if pool is None else np.arange(pool)
        where = (
            f"{len(rest)} items left after {budget.n_pairs} pairs (pool of {n_items})"
            if pool is None
            else f"{pool} items of its pool"
        )
        if count > len(candidates):
            raise InputError(f"{what} = {count} exceeds the {where}")
        return rng.permutation(candidates)[:count]

    images = draw(budget.n_unpaired_images, unpaired_image_pool, "n_unpaired_images")
    texts = draw(budget.n_unpaired_texts, unpaired_text_pool, "n_unpaired_texts")
    return BudgetRows(pairs, images, texts)
