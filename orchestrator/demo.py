"""``sotalign demo``: the embedded default.

Embeds the bundled OpenMoji and digits benchmarks with the packaged default encoders (cached
in the store, so a second run skips it), then for each pair budget trains the teacher alone,
pairs-only SAIL and SOTAlign over seeds, prints one results table (OpenMoji retrieval,
digits zero-shot), and writes ``results.json`` and ``results.png``. ``--synthetic`` runs the
same comparison on the synthetic benchmark instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sotalign.benchmark import SYNTHETIC_DEFAULTS, methods_for, run_synthetic
from sotalign.bundled import ensure_embedded, load_bundled, run_budget_grid
from sotalign.config import AlignConfig
from sotalign.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, load_encoder
from sotalign.io import atomic_path
from sotalign.results import format_table

from orchestrator.overrides import apply_overrides
from orchestrator.plots import plot_vs_pairs
from orchestrator.tracking import RunLogger, encoder_tags, tracking_uri

# The bundled demo's SOTAlign: the paper's method at CPU size (README "Bundled benchmarks").
BUNDLED_DEFAULTS = AlignConfig(
    eps_teacher=0.05,  # = eps_student, as on the synthetic benchmark (README)
    alpha=10.0,  # mass-1 plans: KLOT and SigLIP gradients of the same order (paper.md 3.5)
    lr=1e-3,  # 300 steps instead of the paper's 2000
    steps=300,
    head_dim=256,  # CPU-sized (paper: 1024)
    batch_unpaired=512,
    log_every=100,
    eval_every=50,
)
DEMO_IMAGE_ENCODER = f"{DEFAULT_IMAGE_ENCODER}?image_size=128"  # docs/assets.md: 64-128 px on CPU
METRICS = ["t2i_recall_at_1", "i2t_recall_at_1", "mean_recall_at_1", "t2i_recall_at_5", "digits_top1"]
LABELS = {"t2i_recall_at_1": "OpenMoji T2I R@1", "i2t_recall_at_1": "OpenMoji I2T R@1",
          "mean_recall_at_1": "OpenMoji mean R@1", "t2i_recall_at_5": "OpenMoji T2I R@5", "digits_top1": "digits top-1"}


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="teacher vs SAIL vs SOTAlign on the bundled OpenMoji + digits benchmarks")
    p.add_argument("--n-pairs", type=int, nargs="+", default=[100, 300, 1000], help="pair budgets (default 100 300 1000)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--image-encoder", default=DEMO_IMAGE_ENCODER, help=f"image encoder spec (default {DEMO_IMAGE_ENCODER})")
    p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER, help=f"text encoder spec (default {DEFAULT_TEXT_ENCODER})")
    p.add_argument("--store", type=Path, default=Path("demo_output/store"), help="embedding store (default demo_output/store)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AlignConfig field of the compared methods, e.g. eps_teacher=0.01")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    p.add_argument("--synthetic", action="store_true", help="run on the synthetic benchmark instead (64 pairs, 4000 unpaired)")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1 or min(args.n_pairs) < 2:
        raise ValueError(f"--seeds must be >= 1 and every --n-pairs >= 2, got {args.seeds} and {args.n_pairs}")
    if args.synthetic:
        ignored = [flag for flag, value, default in (
            ("--n-pairs", args.n_pairs, [100, 300, 1000]), ("--store", args.store, Path("demo_output/store")),
            ("--image-encoder", args.image_encoder, DEMO_IMAGE_ENCODER), ("--text-encoder", args.text_encoder, DEFAULT_TEXT_ENCODER),
        ) if value != default]
        if ignored:
            raise ValueError(f"--synthetic uses its own data (64 pairs, 4000 unpaired); {', '.join(ignored)} do not apply to it")
        config = apply_overrides(SYNTHETIC_DEFAULTS, args.overrides)
        rows = run_synthetic(methods_for(config), seeds=range(args.seeds), progress=print)
        metrics, by = METRICS[:4], ("method",)
    else:
        config = apply_overrides(BUNDLED_DEFAULTS, args.overrides)
        logger = RunLogger(tracking_uri(args.tracking_uri), "openmoji")  # fails fast on an unreachable server
        image_encoder, text_encoder = load_encoder(args.image_encoder), load_encoder(args.text_encoder)
        tags = {**encoder_tags(image_encoder.id, text_encoder.id), "dataset": "openmoji"}

        def log_run(model, row):
            run_tags = {**tags, "method": row["method"], "n_pairs": str(row["n_pairs"]), "n_unpaired": str(row["n_unpaired"])}
            logger.log(model, row, run_tags, f"{row['method']}-{row['n_pairs']}pairs-seed{row['seed']}")

        ensure_embedded(args.store, image_encoder, text_encoder)
        data = load_bundled(args.store, image_encoder.id, text_encoder.id)
        rows = run_budget_grid(data, methods_for(config), args.n_pairs, range(args.seeds), progress=print, on_result=log_run)
        metrics, by = METRICS, ("n_pairs", "method")
    table = format_table(rows, metrics, by, LABELS)
    print("\nPercent, mean ± std over seeds:\n")
    print(table)
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": config.to_dict(), "rows": rows, "table": table}, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")
    if not args.synthetic:
        plot = plot_vs_pairs(rows, {"mean_recall_at_1": "OpenMoji mean R@1", "digits_top1": "digits zero-shot top-1"}, args.out / "results.png")
        print(f"wrote {plot}")
        print(f"runs logged to MLflow experiment 'openmoji' at {tracking_uri(args.tracking_uri)}; browse them with: sotalign ui")
    return 0
