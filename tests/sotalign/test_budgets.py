"""Budget sampling: disjointness, no hidden pairing, determinism, named refusals."""

import numpy as np
import pytest

from sotalign.data.budgets import Budget, sample_budget


def test_pairs_and_unpaired_are_disjoint_and_unaligned():
    rows = sample_budget(1000, Budget(100, 600, 600, seed=3))
    assert len(rows.pairs) == 100 and len(set(rows.pairs)) == 100
    assert not set(rows.pairs) & set(rows.unpaired_images)
    assert not set(rows.pairs) & set(rows.unpaired_texts)
    # images and texts are drawn with independent permutations: row k of one is not row k of the other
    assert np.mean(rows.unpaired_images == rows.unpaired_texts) < 0.01


def test_deterministic_per_seed():
    a, b, c = (sample_budget(500, Budget(50, 100, 80, seed=s)) for s in (1, 1, 2))
    assert all(
        np.array_equal(x, y)
        for x, y in zip((a.pairs, a.unpaired_images, a.unpaired_texts), (b.pairs, b.unpaired_images, b.unpaired_texts))
    )
    assert not np.array_equal(a.pairs, c.pairs)


def test_disjoint_unpaired_and_other_pools():
    rows = sample_budget(300, Budget(20, 140, 140), disjoint_unpaired=True)
    assert not set(rows.unpaired_images) & set(rows.unpaired_texts)
    other = sample_budget(300, Budget(20, 50, 70), unpaired_image_pool=1797)
    assert other.unpaired_images.max() < 1797 and len(other.unpaired_images) == 50
    assert not set(other.pairs) & set(other.unpaired_texts)


def test_budget_larger_than_pool_names_both_numbers():
    with pytest.raises(ValueError, match="n_pairs = 400 exceeds the 300 items"):
        sample_budget(300, Budget(400, 0, 0))
    with pytest.raises(ValueError, match="n_unpaired_texts = 290 exceeds the 280 items left after 20 pairs"):
        sample_budget(300, Budget(20, 10, 290))
    with pytest.raises(ValueError, match="= 300 exceeds the 280 items left"):
        sample_budget(300, Budget(20, 150, 150), disjoint_unpaired=True)
    with pytest.raises(ValueError, match="n_unpaired_images = 2000 exceeds the 1797 items of its pool"):
        sample_budget(300, Budget(20, 2000, 10), unpaired_image_pool=1797)
