"""``sotalign compare``: compare runs of an MLflow experiment by a tag (encoder pair, method, ...)
without opening the UI: a table of each group's best run (chosen by the validation metric, its test
value beside) and mean ± std, a bar chart (PNG) and, with ``--gallery``, the retrieval galleries of
each group's best run side by side (one PNG). ``--json`` prints the table's rows as a JSON list instead."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orchestrator.gallery import side_by_side
from orchestrator.inspection import GALLERY_FILE, GALLERY_TAG
from orchestrator.output import add_json_argument, json_output
from orchestrator.tracking import client, ensure_reachable, tracking_uri
from sotalign.checks import InputError
from sotalign.experiments.results import summarize


def add_parser(commands) -> None:
    p = commands.add_parser("compare", help="compare MLflow runs grouped by encoder pair, teacher, method, ...")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (e.g. openmoji)")
    p.add_argument(
        "--group-by", default="encoder_pair", help="run tag to group by (encoder_pair, teacher, method, n_pairs, ...)"
    )
    p.add_argument("--metric", default="mean_recall_at_1", help="metric to compare (default mean_recall_at_1)")
    p.add_argument("--mode", choices=("max", "min"), default="max", help="whether larger is better (default max)")
    p.add_argument("--filter", default="", help="MLflow filter string, e.g. \"tags.n_pairs = '300'\"")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="bar chart (default compare.png)")
    p.add_argument(
        "--gallery",
        type=Path,
        default=None,
        metavar="PNG",
        help="also stitch the retrieval gallery of each group's best run side by side into PNG",
    )
    add_json_argument(p, "the table's rows (one per group)")
    p.set_defaults(run=run)


def selection_metric(metric: str) -> str:
    """The validation counterpart a best run is chosen by (``mean_recall_at_1`` -> ``val/mean_recall_at_1``):
    a run is never picked by the test score it is then reported with."""
    return metric if metric.startswith("val/") else f"val/{metric}"


def collect(uri: str, experiment: str, group_by: str, metric: str, filter_string: str = "") -> list[dict]:
    """One row per run that has ``metric``: its group (tag value), its value and, where the run logged it,
    its validation counterpart (``selection_metric``; None otherwise)."""
    from mlflow.exceptions import MlflowException

    store = client(uri)
    exp = store.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in store.search_experiments()) or "none"
        raise InputError(f"no MLflow experiment {experiment!r} at {uri}; experiments: {names}")
    try:
        runs = store.search_runs([exp.experiment_id], filter_string, max_results=50000)
    except MlflowException as error:
        raise InputError(f"bad --filter {filter_string!r}: {error.message}") from None
    select = selection_metric(metric)
    rows = [
        {
            "group": r.data.tags.get(group_by, "(no tag)"),
            metric: r.data.metrics[metric],
            select: r.data.metrics.get(select),
            "run_id": r.info.run_id,
        }
        for r in runs
        if metric in r.data.metrics
    ]
    if not rows:
        raise InputError(f"none of the {len(runs)} runs in {experiment!r} has the metric {metric!r}")
    return rows


def run(args: argparse.Namespace) -> int:
    uri = tracking_uri(args.tracking_uri)
    ensure_reachable(uri)
    rows = collect(uri, args.experiment, args.group_by, args.metric, args.filter)
    stats = summarize(rows, args.metric, by=("group",))
    best = best_runs(rows, args.metric, args.mode)
    select = selection_metric(args.metric)
    counts = {g: sum(r["group"] == g for r in rows) for (g,) in stats}
    order = sorted(stats, key=lambda k: stats[k][0], reverse=args.mode == "max")
    with json_output(args.json) as emit:
        if args.json:
            emit([_json_row(args, g, counts[g], best.get(g), stats[(g,)]) for (g,) in order])
        else:
            print(f"| {args.group_by} | runs | {args.metric} of the best by {select} | its {select} | mean ± std |")
            print("|---|---|---|---|---|")
            for (group,) in order:
                mean, std = stats[(group,)]
                chosen = best.get(group)
                picked = f"{chosen[args.metric]:.2f} | {chosen[select]:.2f}" if chosen else f"- | - (no {select})"
                print(f"| {group} | {counts[group]} | {picked} | {mean:.2f} ± {std:.2f} |")
        _plot(order, stats, args.metric, args.group_by, args.out)
        print(f"\nwrote {args.out}")
        if args.gallery is not None:
            chosen = [(g, best[g]["run_id"], best[g][args.metric]) for (g,) in order if g in best]
            if not chosen:
                raise InputError(f"no run logged {select}: no best run to show the gallery of")
            stitch_galleries(uri, chosen, args.metric, args.gallery)
            print(f"wrote {args.gallery}")
    return 0


def _json_row(args: argparse.Namespace, group: str, runs: int, chosen: dict | None, stats: tuple) -> dict:
    """One row of the table as ``--json`` prints it: the group, its run count, its best run (by the
    validation metric; None where no run logged it) with both values, and the mean and std over runs."""
    select = selection_metric(args.metric)
    return {
        args.group_by: group,
        "runs": runs,
        "best_run_id": chosen["run_id"] if chosen else None,
        args.metric: chosen[args.metric] if chosen else None,
        select: chosen[select] if chosen else None,
        "mean": stats[0],
        "std": stats[1],
    }


def best_runs(rows: list[dict], metric: str, mode: str = "max") -> dict[str, dict]:
    """group -> its best row by the validation counterpart of ``metric`` (``collect``'s rows); a group
    none of whose runs logged it has no best."""
    pick, select = (max if mode == "max" else min), selection_metric(metric)
    groups = dict.fromkeys(row["group"] for row in rows if row[select] is not None)
    return {
        g: pick((r for r in rows if r["group"] == g and r[select] is not None), key=lambda r: r[select]) for g in groups
    }


def stitch_galleries(uri: str, runs: list[tuple[str, str, float]], metric: str, out: Path) -> Path:
    """The ``plots/gallery.png`` of each (group, run id, value) side by side, labelled; runs without
    one (synthetic data) are named and left out."""
    import tempfile

    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small PNG per run: no bars
    store = client(uri)
    with tempfile.TemporaryDirectory() as folder:
        paths, labels = [], []
        for group, run_id, value in runs:
            try:
                paths.append(Path(store.download_artifacts(run_id, GALLERY_FILE, f"{folder}/{run_id}")))
                labels.append(f"{group}: {metric} {value:.2f} (run {run_id[:8]})")
            except (MlflowException, OSError):
                why = store.get_run(run_id).data.tags.get(GALLERY_TAG, "no gallery logged (trained before galleries)")
                print(f"{group}: run {run_id[:8]} has no gallery ({why})")
        if not paths:
            raise InputError("none of the compared runs has a retrieval gallery (plots/gallery.png)")
        return side_by_side(paths, labels, out)


def _plot(order, stats, metric: str, group_by: str, path: Path) -> None:
    from orchestrator.plots import plt, save_figure  # the headless backend, set there

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(order)), 3.8))
    labels = [k[0] for k in order]
    ax.bar(range(len(order)), [stats[k][0] for k in order], yerr=[stats[k][1] for k in order], capsize=4)
    ax.set_xticks(
        range(len(order)),
        [label if len(label) < 40 else label[:37] + "..." for label in labels],
        rotation=20,
        ha="right",
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {group_by} (mean ± std over runs)")
    save_figure(fig, path, dpi=120)
