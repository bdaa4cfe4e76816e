"""Summaries of result rows (one dict per run): mean ± std over seeds, as Markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarize(rows: list[dict], metric: str, by: Sequence[str] = ("method",)) -> dict[tuple, tuple[float, float]]:
    """group key (values of ``by``) -> (mean, sample std) of ``metric``, groups in first-seen order."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row[metric])
    return {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in groups.items()}


def format_table(rows: list[dict], metrics: Sequence[str], by: Sequence[str] = ("method",), labels: dict | None = None) -> str:
    """A Markdown table: one line per group, ``mean ± std`` per metric (the value alone for a
    single run); ``labels`` renames columns."""
    labels = labels or {}
    stats = {m: summarize(rows, m, by) for m in metrics}
    lines = ["| " + " | ".join([*by, *(labels.get(m, m) for m in metrics)]) + " |", "|" + "---|" * (len(by) + len(metrics))]
    for key in stats[metrics[0]]:
        single = len([r for r in rows if tuple(r[k] for k in by) == key]) == 1
        cells = [f"{stats[m][key][0]:.1f}" + ("" if single else f" ± {stats[m][key][1]:.1f}") for m in metrics]
        lines.append("| " + " | ".join([*map(str, key), *cells]) + " |")
    return "\n".join(lines)
