"""Result plots (PNG): a run's training curves and a sweep's metric against its parameters."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close ``fig``."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_history(history: list[dict], path: str | Path) -> Path:
    """Training curves of one run: the loss terms and the validation mean R@1 against the step."""
    losses = sorted({k for record in history for k in record if k.startswith("loss/")})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in losses:
        steps, values = zip(*[(r["step"], r[key]) for r in history if key in r])
        left.plot(steps, values, marker=".", label=key)
    left.set_yscale("symlog", linthresh=1e-3)
    left.set_xlabel("step")
    left.set_title("losses")
    if losses:  # a run that trains nothing (the teacher, training-free methods) has no loss curve
        left.legend(fontsize=8)
    val = [(r["step"], r["val/mean_recall_at_1"]) for r in history if "val/mean_recall_at_1" in r]
    if val:
        right.plot(*zip(*val), marker="o")
    right.set_xlabel("step")
    right.set_title("validation mean R@1 (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_metric_vs_params(rows: list[dict], metric: str, params: list[str], path: str | Path) -> Path:
    """A sweep at a glance: ``metric`` against each swept parameter, one panel each (one dot per trial)."""
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.4), squeeze=False)
    for ax, name in zip(axes[0], params):
        points = [(r[name], r[metric]) for r in rows if r.get(name) is not None]
        if points and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points):
            ax.scatter(*zip(*points))
            if min(x for x, _ in points) > 0 and max(x for x, _ in points) / min(x for x, _ in points) > 20:
                ax.set_xscale("log")
        elif points:
            labels = list(dict.fromkeys(str(x) for x, _ in points))
            ax.scatter([labels.index(str(x)) for x, _ in points], [y for _, y in points])
            ax.set_xticks(
                range(len(labels)),
                [label if len(label) < 24 else label[:21] + "..." for label in labels],
                rotation=20,
                ha="right",
            )
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
