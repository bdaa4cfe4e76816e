"""The paper's training step, timed against its floor, for this code and an earlier commit in one run.

One step of ``sotalign.stage2.train_heads`` at the paper's batch (App. A.1: 10k pairs + 22k unpaired,
heads to d = 1024, eps = 0.05, eps* = 0.01, 100 Sinkhorn iterations), the teacher's plan solved anew
every step (22k unpaired drawn from a pool twice their size: the paper draws them from 1M, so its
teacher plan never repeats). A step's time is (2 steps - 1 step), each run in its own process, so set-up
is not counted; its peak memory is the 2-step process's (RSS above the inputs on a CPU, the allocator's
peak on a GPU).

The floor is what the step cannot avoid on this device: the bytes of the two Sinkhorn solves (one read
of each n x m float32 kernel per iteration: E v and u^T E in one pass, as on a CPU here) at the measured
copy bandwidth, plus the FLOPs of the step's n x m x d matrix products at the measured matmul rate
(student logits once, teacher logits twice, the two gradient products, SigLIP's pairs forward and
backward).

``--before REF`` times the same step on the ``sotalign`` package of a git commit (its files exported to a
temporary folder, first on ``PYTHONPATH``), with this file's harness, in the same run.

Usage: ``uv run python -m benchmarks.paper_step [--before REF] [--device cuda] [--pairs 10000 --unpaired 22000]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.harness import MMAP_THRESHOLD  # the workers find it too: ROOT is on their PYTHONPATH

ROOT = Path(__file__).resolve().parents[1]
D_IMAGE, D_TEXT = (
    1280,
    384,
)  # encoder widths of the CPU benchmarks (EfficientNet, MiniLM): heads 1280 -> 1024, 384 -> 1024
TEACHER_DIM = 512  # CCA teacher width (its projections of the pool are precomputed: it sets the teacher matmuls)


def _worker(spec: dict) -> dict:
    """Build the step's inputs, then run ``spec["steps"]`` steps; their time and peak memory."""
    import torch

    from benchmarks.cases import EPS_STUDENT, EPS_TEACHER, JOINT_DIM, N_ITER, unit_rows
    from benchmarks.harness import _reset_peak, _status_kib
    from sotalign.config import AlignConfig
    from sotalign.heads import build_head
    from sotalign.losses import SigLIPLoss
    from sotalign.objectives import Stage2Inputs
    from sotalign.stage2 import train_heads

    device, pairs, unpaired = spec["device"], spec["pairs"], spec["unpaired"]
    if spec["kind"] == "floor":
        return _floor_rates(device)
    inputs = Stage2Inputs(
        paired_images=unit_rows(pairs, D_IMAGE, 1),
        paired_texts=unit_rows(pairs, D_TEXT, 2),
        unpaired_images=unit_rows(2 * unpaired, D_IMAGE, 3),
        unpaired_texts=unit_rows(2 * unpaired, D_TEXT, 4),
        teacher_images=unit_rows(2 * unpaired, TEACHER_DIM, 5),
        teacher_texts=unit_rows(2 * unpaired, TEACHER_DIM, 6),
    )
    config = AlignConfig(
        steps=spec["steps"],
        batch_pairs=pairs,
        batch_unpaired=unpaired,
        alpha=1.0,
        eps_student=EPS_STUDENT,
        eps_teacher=EPS_TEACHER,
        n_iter=N_ITER,
        log_every=10**9,
        eval_every=10**9,
        device=device,
    )
    heads = build_head("linear", D_IMAGE, JOINT_DIM), build_head("linear", D_TEXT, JOINT_DIM)
    cuda = device.startswith("cuda")
    base = 0 if cuda else _reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_heads(*heads, SigLIPLoss(), inputs, config)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else (_status_kib("VmHWM") - base) / 1024
    return {"seconds": seconds, "peak_mib": peak}


def _floor_rates(device: str) -> dict:
    """The device's copy bandwidth (bytes/s, read + write) and float32 matmul rate (FLOP/s), best of 3."""
    import torch

    def best(run) -> float:
        times = []
        for _ in range(4):  # the first is a warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    src = torch.ones(1 << 28, device=device)  # 1 GiB of float32: far beyond every cache
    dst = torch.zeros_like(src)
    a, b = torch.randn(4096, 1024, device=device), torch.randn(1024, 4096, device=device)
    return {
        "bandwidth": 2 * src.numel() * 4 / best(lambda: dst.copy_(src)),
        "flops": 2 * 4096 * 1024 * 4096 / best(lambda: a @ b),
    }


def _sotalign_of(ref: str, folder: Path) -> Path:
    """``sotalign/`` as it was at ``ref``, exported under ``folder`` (a tree to put first on PYTHONPATH)."""
    archive = subprocess.run(["git", "archive", ref, "sotalign"], cwd=ROOT, capture_output=True, check=True).stdout
    tar = folder / "sotalign.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as files:
        files.extractall(folder, filter="data")
    return folder


def _run(spec: dict, first_on_path: Path | None) -> dict:
    """``_worker(spec)`` in a fresh interpreter: this file as a script, so that only ``sotalign`` comes
    from ``first_on_path`` and the harness from this checkout."""
    path = [str(first_on_path)] if first_on_path else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*path, str(ROOT)]),
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),  # peak RSS = live memory (benchmarks/harness.py)
    }
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sinkhorn_bytes(n: int) -> int:
    """Bytes the two solves must read: each n x n float32 kernel once per iteration (100, paper App. A.1)."""
    return 2 * 100 * n * n * 4


def _floor_seconds(rates: dict, pairs: int, unpaired: int) -> tuple[float, float]:
    """(bandwidth floor, compute floor) of one step, in seconds."""
    n = unpaired
    sinkhorn_bytes = _sinkhorn_bytes(n)
    products = 2 * n * n * (1024 + 2 * TEACHER_DIM + 2 * 1024)  # logits (student, teacher x 2), two gradients
    products += 3 * 2 * pairs * pairs * 1024  # SigLIP on the pairs: forward and two backward products
    return sinkhorn_bytes / rates["bandwidth"], products / rates["flops"]


GPU_BANDWIDTH = {"H100 SXM (3.35 TB/s)": 3.35e12, "H200 (4.8 TB/s)": 4.8e12}  # vendor peak HBM bandwidth
PAPER_STEPS = 2000  # paper App. A.1


def run(device: str = "cpu", pairs: int = 10_000, unpaired: int = 22_000, before: str | None = None):
    """The step's table (Markdown) and records: this checkout, and ``before`` where given."""
    base = {"device": device, "pairs": pairs, "unpaired": unpaired}
    rates = _run({**base, "kind": "floor"}, None)
    bandwidth_floor, compute_floor = _floor_seconds(rates, pairs, unpaired)
    floor = bandwidth_floor + compute_floor
    versions: dict[str, Path | None] = {"this checkout": None}
    records, rows, times = [{"bench": "paper_step_floor", **base, **rates}], [], {}
    with tempfile.TemporaryDirectory() as folder:
        if before:
            versions = {f"before ({before})": _sotalign_of(before, Path(folder)), **versions}
        for name, tree in versions.items():
            one, two = (_run({**base, "kind": "step", "steps": k}, tree) for k in (1, 2))
            records.append({"bench": "paper_step", "code": name, **base, "one_step": one, "two_steps": two})
            if "error" in one or "error" in two:
                rows.append(f"| {name} | {one.get('error') or two.get('error')} | | | |")
                continue
            times[name] = two["seconds"] - one["seconds"]
            hours = PAPER_STEPS * times[name] / 3600
            rows.append(
                f"| {name} | {times[name]:.1f} | {two['peak_mib']:.0f} | {100 * floor / times[name]:.0f}% | {hours:.1f} |"
            )
    text = (
        f"The paper's step ({pairs} pairs + {unpaired} unpaired, d = 1024, eps* = 0.01, teacher not cached) on "
        f"{device}: copy bandwidth {rates['bandwidth'] / 1e9:.1f} GB/s, matmul {rates['flops'] / 1e9:.0f} GFLOP/s; "
        f"floor {bandwidth_floor:.2f} s (Sinkhorn bytes) + {compute_floor:.2f} s (products) = {floor:.2f} s\n\n"
        f"| code | s / step | peak MiB | floor / time | {PAPER_STEPS} steps, h |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    if len(times) == 2:
        earlier, now = times.values()
        text += f"\n\nspeed-up: {earlier / now:.2f}x"
    sinkhorn_bytes = _sinkhorn_bytes(unpaired)
    text += (
        f"\n\nGPU floor of the two Sinkhorn solves ({sinkhorn_bytes / 1e9:.0f} GB read per step), not a measurement: "
        + ", ".join(
            f"{name} {sinkhorn_bytes / bandwidth * 1e3:.0f} ms per step" for name, bandwidth in GPU_BANDWIDTH.items()
        )
    )
    return text, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a git commit to time beside this checkout (e.g. HEAD~3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--pairs", type=int, default=10_000)  # paper App. A.1
    parser.add_argument("--unpaired", type=int, default=22_000)  # paper App. A.1: batches of up to 32k
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    print(run(args.device, args.pairs, args.unpaired, args.before)[0])


if __name__ == "__main__":
    main()
