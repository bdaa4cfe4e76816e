"""How far the unpaired data lies from the paired data (paper eq. 14, Table 7, Fig. 5).

d(D, D_p) = SSW(X, A) + SSW(Y, B): the spherical sliced Wasserstein distance (p = 2, 500
projections, POT's implementation, as in the paper) between unpaired and paired images, plus
the same between unpaired and paired texts, each on L2-normalised frozen-encoder embeddings.
The paper averages 20 random subsets of 100k samples; we take at most ``max_samples`` rows per
set and average ``repeats`` draws of the projections (POT's torch backend, float64).
"""

from __future__ import annotations

import numpy as np
import torch

from sotalign.checks import InputError

N_PROJECTIONS = 500  # paper App. B.3: N = 500 projections
SSW_P = 2  # paper App. B.3: p = 2


def spherical_sliced_wasserstein(
    x, y, n_projections: int = N_PROJECTIONS, repeats: int = 1, max_samples: int = 5000, seed: int = 0
) -> float:
    """SSW_2 between the empirical distributions of the rows of ``x`` and ``y`` (normalised here;
    all-zero rows have no direction on the sphere and are left out)."""
    import ot

    rng = np.random.default_rng(seed)
    sets = []
    for data in (x, y):
        a = torch.as_tensor(data).double()
        a = torch.nn.functional.normalize(a[a.norm(dim=1) > 0], dim=1)
        if len(a) == 0:
            raise InputError("SSW needs at least one non-zero embedding per set")
        sets.append(a[torch.from_numpy(rng.choice(len(a), max_samples, replace=False))] if len(a) > max_samples else a)
    if sets[0].shape[1] != sets[1].shape[1]:
        raise InputError(f"SSW needs embeddings of one space, got dims {sets[0].shape[1]} and {sets[1].shape[1]}")
    values = [
        ot.sliced_wasserstein_sphere(sets[0], sets[1], n_projections=n_projections, p=SSW_P, seed=seed + r)
        for r in range(repeats)
    ]
    return float(np.mean([float(v) for v in values]))


def distribution_shift(paired_images, paired_texts, unpaired_images, unpaired_texts, **options) -> dict[str, float]:
    """``ssw/images`` = SSW(X, A), ``ssw/texts`` = SSW(Y, B) and their sum ``ssw/total`` (paper eq. 14)."""
    images = spherical_sliced_wasserstein(unpaired_images, paired_images, **options)
    texts = spherical_sliced_wasserstein(unpaired_texts, paired_texts, **options)
    return {"ssw/images": images, "ssw/texts": texts, "ssw/total": images + texts}
