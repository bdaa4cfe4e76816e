"""``sotalign demo``: the teacher alone vs pairs-only SAIL vs SOTAlign on the synthetic
benchmark, over seeds; prints a Markdown table and writes ``results.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sotalign.benchmark import SYNTHETIC_DEFAULTS, format_table, methods_for, run_synthetic
from sotalign.io import atomic_path

from orchestrator.overrides import apply_overrides


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="compare teacher / SAIL / SOTAlign on the synthetic benchmark")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--steps", type=int, default=SYNTHETIC_DEFAULTS.steps, help="stage-2 steps per run")
    p.add_argument("--n-pairs", type=int, default=64, help="paired samples (default 64)")
    p.add_argument("--n-unpaired", type=int, default=4000, help="unpaired images and texts each (default 4000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AlignConfig field of SOTAlign (and of its teacher/SAIL rows), e.g. eps_teacher=0.01")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1 or args.steps < 1:
        raise ValueError(f"--seeds and --steps must be >= 1, got {args.seeds} and {args.steps}")
    config = apply_overrides(SYNTHETIC_DEFAULTS.replace(steps=args.steps), args.overrides)
    print(f"synthetic benchmark: {args.n_pairs} pairs, {args.n_unpaired} unpaired images + texts, {args.seeds} seeds")
    rows = run_synthetic(
        methods_for(config),
        seeds=range(args.seeds),
        progress=print,
        n_pairs=args.n_pairs,
        n_unpaired=args.n_unpaired,
    )
    table = format_table(rows)
    print("\nTest retrieval on held-out pairs (percent, mean ± std over seeds):\n")
    print(table)
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": config.to_dict(), "rows": rows}, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0
