"""Result plots (PNG): metrics vs the number of pairs, one line per method (mean ± std)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402

from sotalign.results import summarize  # noqa: E402


def plot_vs_pairs(rows: list[dict], metrics: dict[str, str], path: str | Path) -> Path:
    """One panel per metric (title = its label), x = n_pairs (log scale), one line per method."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics.items()):
        stats = summarize(rows, metric, by=("method", "n_pairs"))
        for method in dict.fromkeys(k[0] for k in stats):
            points = sorted((n, mean, std) for (m, n), (mean, std) in stats.items() if m == method)
            xs, ys, es = zip(*points)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("number of image-text pairs")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
