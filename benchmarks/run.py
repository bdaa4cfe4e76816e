"""``make bench``: every benchmark suite, as Markdown tables on stdout and JSON in ``bench_output/``.

Suites: ``klot`` (explicit vs unrolled vs POT), ``sinkhorn`` (vs POT, and the bandwidth bound),
``training`` (steps/s at the paper's layer sizes, chunked retrieval 5k x 25k), ``scale``
(blockwise KLOT at n = 32768), ``paper_step`` (one training step at the paper's batch against its floor), ``formats`` (embedding throughput from an image
folder, WebDataset shards and a Parquet of image bytes) and ``store`` (reading a store from S3 on
a loopback moto server vs from a local disk). Each case runs in its own process
(``benchmarks.harness``), so its peak memory is its own; ratios compare cases of the same run.

Usage: ``uv run python -m benchmarks.run [--suites klot sinkhorn] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks import embed_formats, klot, paper_step, scale, sinkhorn, store_read, training

SUITES = ("klot", "sinkhorn", "training", "scale", "paper_step", "formats", "store")
FULL = {
    "klot": [1024, 2048, 4096, 8192],
    "sinkhorn": [1024, 2048, 4096],
    "bandwidth": [4096, 8192],
    "training": [1024, 4096, 8192],
    "scale": [16384, 32768],
    "paper_step": (10_000, 22_000),  # pairs, unpaired: paper App. A.1
    "formats": 512,  # images
    "store": 32768,  # rows of 512-d
}
QUICK = {
    "klot": [256, 512],
    "sinkhorn": [256, 512],
    "bandwidth": [2048],
    "training": [512],
    "scale": [4096],
    "paper_step": (300, 700),
    "formats": 64,
    "store": 4096,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (the paper step at 300 + 700): a smoke run of every suite"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    import torch

    header = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"# Benchmarks ({header})\n")
    sections, records = [], []
    for suite in args.suites:
        start = time.perf_counter()
        if suite == "klot":
            text, recs = klot.run(sizes["klot"], args.repeats)
        elif suite == "sinkhorn":
            text, recs = sinkhorn.run(sizes["sinkhorn"], sizes["bandwidth"], args.repeats)
        elif suite == "training":
            text, recs = training.run(sizes["training"], args.repeats)
        elif suite == "scale":
            text, recs = scale.run(sizes["scale"])
        elif suite == "paper_step":
            text, recs = paper_step.run("cpu", *sizes["paper_step"])
        elif suite == "formats":
            text, recs = embed_formats.run(sizes["formats"], args.repeats)
        else:
            text, recs = store_read.run(sizes["store"], 512, args.repeats)
        text += f"\n\n({suite}: {time.perf_counter() - start:.0f} s)"
        print(text + "\n", flush=True)
        sections.append(text)
        records.extend(recs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"machine": header, "results": records}, indent=2))
    (args.out / "bench.md").write_text(f"# Benchmarks ({header})\n\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")


if __name__ == "__main__":
    main()
