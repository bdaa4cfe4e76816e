"""``sotalign demo``: the embedded default, through the orchestrator.

Runs the shipped ``search_spaces/demo.yaml`` as a sweep on a local Ray cluster with MLflow in sqlite: it
embeds the bundled OpenMoji + digits benchmarks with the packaged encoders if they are not
cached, trains the teacher alone, pairs-only SAIL and SOTAlign on two encoder pairs (one Ray
Train run each), prints the comparison per encoder pair and method, and the commands to
browse the runs. ``--synthetic`` runs the library alone (no Ray, no MLflow) on the synthetic
benchmark instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from orchestrator import shipped
from orchestrator.compare import best_runs, collect, stitch_galleries
from orchestrator.experiment_file import split_tree
from orchestrator.hints import command
from orchestrator.overrides import add_set_argument, parse_assignments, with_changes
from orchestrator.search_space import load_search_space
from orchestrator.sweep import TEST_METRICS, run_sweep
from orchestrator.tracking import tracking_uri
from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.experiments.results import format_table
from sotalign.experiments.synthetic_comparison import SYNTHETIC_DEFAULTS, methods_for, run_synthetic
from sotalign.io import atomic_path

DEMO_SPACE = "demo"  # the shipped search_spaces/demo.yaml
LABELS = {
    "t2i_recall_at_1": "T2I R@1",
    "i2t_recall_at_1": "I2T R@1",
    "mean_recall_at_1": "mean R@1",
    "t2i_recall_at_5": "T2I R@5",
    "digits_top1": "digits top-1",
    "data.encoder_pair": "encoder pair",
}


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="teacher vs SAIL vs SOTAlign on the bundled benchmarks, as a local Ray sweep")
    p.add_argument(
        "--space",
        default=DEMO_SPACE,
        help="search space to run: a file, or the name of a shipped one (default demo: search_spaces/demo.yaml)",
    )
    add_set_argument(p, "override a base key of every trial, e.g. eps_teacher=0.01 or data.n_pairs=100")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)",
    )
    p.add_argument(
        "--synthetic", action="store_true", help="the library alone on the synthetic benchmark (no Ray, no MLflow)"
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds with --synthetic (default 3)")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.synthetic:
        return _synthetic(args)
    space = load_search_space(shipped.resolve(args.space))
    space.base = with_changes(space.base, parse_assignments(args.overrides))
    split_tree(space.base)  # a bad --set fails here, before Ray or MLflow start
    space.name = f"{space.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    uri = tracking_uri(args.tracking_uri)
    summary = run_sweep(space, uri)
    if summary["interrupted"]:
        print("demo interrupted")
        return 130
    by = [p.name for p in space.parameters]

    def in_file_order(row):  # the rows as the space lists its choices: pair by pair, method by method
        return [
            (p.choices.index(row[p.name]), "")
            if p.choices and row[p.name] in p.choices
            else (len(p.choices or ()), str(row[p.name]))
            for p in space.parameters
        ]

    rows = sorted((r for r in summary["rows"] if r["status"] == "done"), key=in_file_order)
    table = format_table(rows, [m for m in TEST_METRICS if all(m in r for r in rows)], by, LABELS)
    print("\nTest metrics in percent:\n")
    print(table)
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text(table + "\n")
    print(f"\nwrote {args.out / 'results.md'}; sweep files in {summary['folder']}")
    if _pairs_gallery(uri, summary, args.out / "gallery.png"):
        print(f"wrote {args.out / 'gallery.png'}: SOTAlign's retrieval gallery, encoder pairs side by side")
    print(f"runs are in MLflow ({uri}), experiment {summary['experiment']!r}:")
    print(f"  {command('ui', uri=uri)}    # then open the printed link to the runs table")
    compare = ["compare", "--experiment", summary["experiment"], "--group-by", "encoder_pair"]
    compare += ["--filter", "tags.method = 'sotalign'", "--gallery", "gallery.png"]
    print(f"  {command(*compare, uri=uri)}")
    return 0


def _pairs_gallery(uri: str, summary: dict, out: Path) -> bool:
    """The galleries of this sweep's SOTAlign runs, the best of each encoder pair (by validation) side by
    side; False where the sweep trained no SOTAlign run (a user's ``--space``)."""
    scope = f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}' and tags.method = 'sotalign'"
    try:
        best = best_runs(
            collect(uri, summary["experiment"], "encoder_pair", "mean_recall_at_1", scope), "mean_recall_at_1"
        )
        runs = [(pair, row["run_id"], row["mean_recall_at_1"]) for pair, row in sorted(best.items())]
        stitch_galleries(uri, runs, "mean R@1", out)
    except InputError as why:  # no SOTAlign run, or none with images
        print(f"no gallery: {why}")
        return False
    return True


def _synthetic(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    config = AlignConfig.from_dict({**SYNTHETIC_DEFAULTS.to_dict(), **parse_assignments(args.overrides)})
    rows = run_synthetic(methods_for(config), seeds=range(args.seeds), progress=print)
    table = format_table(rows, list(TEST_METRICS[:4]), ("method",), LABELS)
    print("\nPercent, mean ± std over seeds:\n")
    print(table)
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": config.to_dict(), "rows": rows, "table": table}, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0
