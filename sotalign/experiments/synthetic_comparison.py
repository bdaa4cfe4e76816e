"""Compare methods on the synthetic benchmark over seeds: the first demo and an acceptance test.

A method is a named ``AlignConfig``; ``methods_for`` derives the three the paper's story
needs from one SOTAlign config: the teacher alone (``steps=0``), pairs-only SAIL
(``divergence="none"``) and SOTAlign itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sotalign.config import AlignConfig
from sotalign.data.synthetic import make_synthetic
from sotalign.evaluation import retrieval
from sotalign.two_stage import fit

# The synthetic demo's setting: AlignConfig's defaults (docs/results/defaults-choice), CPU-sized
# unpaired batches (paper: 32k - the pairs) and a record every 100 steps.
SYNTHETIC_DEFAULTS = AlignConfig(batch_unpaired=512, log_every=100)


def methods_for(config: AlignConfig) -> dict[str, AlignConfig]:
    return {
        "teacher": config.replace(steps=0),
        "sail": config.replace(divergence="none"),
        "sotalign": config,
    }


def run_synthetic(
    methods: dict[str, AlignConfig],
    seeds: Iterable[int] = (0, 1, 2),
    progress: Callable[[str], None] | None = None,
    **benchmark_options,
) -> list[dict]:
    """One row per (method, seed): test retrieval metrics and wall time."""
    rows = []
    for seed in seeds:
        bench = make_synthetic(seed=seed, **benchmark_options)
        for name, config in methods.items():
            start = time.perf_counter()
            model = fit(
                bench.paired_images,
                bench.paired_texts,
                bench.unpaired_images,
                bench.unpaired_texts,
                config.replace(seed=seed),
                validation=(bench.val_images, bench.val_texts),
            )
            metrics = retrieval(model.encode_image(bench.test_images), model.encode_text(bench.test_texts))
            rows.append({"method": name, "seed": seed, "seconds": time.perf_counter() - start, **metrics})
            if progress is not None:
                progress(f"seed {seed} {name:<9} mean R@1 {metrics['mean_recall_at_1']:.1f}")
    return rows
