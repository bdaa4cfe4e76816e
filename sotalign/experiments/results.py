"""Summaries of result rows (one dict per run): mean ± std over seeds, as Markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarize(rows: list[dict], metric: str, by: Sequence[str] = ("method",)) -> dict[tuple, tuple[float, float]]:
    """group key (values of ``by``) -> (mean, sample std) of ``metric`` over seeds, groups in
    first-seen order. Rows of one group and seed (repeats of a deterministic run) count once,
    as their mean; rows without ``metric`` are skipped."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        if row.get(metric) is not None:
            seeds = groups.setdefault(tuple(row[k] for k in by), {})
            seeds.setdefault(row.get("seed", len(seeds)), []).append(row[metric])
    out = {}
    for key, seeds in groups.items():
        values = [statistics.fmean(v) for v in seeds.values()]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def seeds_of(rows: list[dict], by: Sequence[str], key: tuple) -> int:
    """How many seeds a group holds."""
    return len({row.get("seed") for row in rows if tuple(row[k] for k in by) == key})


def format_table(
    rows: list[dict],
    metrics: Sequence[str],
    by: Sequence[str] = ("method",),
    labels: dict | None = None,
    digits: dict | None = None,
    sort_by: str | None = None,
) -> str:
    """A Markdown table: one line per group, ``mean ± std`` per metric (the value alone for a
    single run, ``(n=k)`` on a group with fewer seeds than the table's fullest: ``cell``); ``labels``
    renames columns, ``digits`` sets decimals per metric (default 1); ``sort_by`` (one of
    ``metrics``) orders the groups by its mean, highest first (else first-seen order)."""
    labels, digits = labels or {}, digits or {}
    stats = {m: summarize(rows, m, by) for m in metrics}
    order = list(stats[metrics[0]])
    if sort_by is not None:
        order.sort(key=lambda key: -stats[sort_by][key][0] if key in stats[sort_by] else float("inf"))
    lines = [
        "| " + " | ".join([*by, *(labels.get(m, m) for m in metrics)]) + " |",
        "|" + "---|" * (len(by) + len(metrics)),
    ]
    counts = {key: seeds_of(rows, by, key) for key in order}
    full = max(counts.values(), default=0)
    for key, seeds in counts.items():
        cells = [cell(stats[m].get(key), seeds, digits.get(m, 1), full) for m in metrics]
        lines.append("| " + " | ".join([*map(str, key), *cells]) + " |")
    return "\n".join(lines)


def cell(stat: tuple[float, float] | None, seeds: int = 1, digits: int = 1, full: int = 1) -> str:
    """``mean ± std`` over ``seeds`` (the mean alone for one seed; ``–`` for no value), marked
    ``(n=seeds)`` when it averages fewer seeds than ``full``, the table's fullest cell: a cell
    missing a seed never looks complete."""
    if stat is None:
        return "–"
    text = f"{stat[0]:.{digits}f}" + ("" if seeds == 1 else f" ± {stat[1]:.{digits}f}")
    return text + (f" (n={seeds})" if seeds < full else "")
