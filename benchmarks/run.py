"""KLOT and Sinkhorn performance, measured as ratios within one run.

Each case runs in a fresh child process, so its peak memory is that process's own max RSS
above its level after imports and inputs were built, never a tracemalloc estimate. Cases:

* KLOT forward + backward with the explicit gradient (Theorem 5.1), with the matvec and the
  logsumexp solvers, vs autograd through the unrolled logsumexp Sinkhorn (same iterations);
* our Sinkhorn forward vs POT's ``sinkhorn_log`` (same epsilon, same 100 iterations).

Usage: ``make bench`` or ``uv run python benchmarks/run.py [--sizes 512 1024 2048] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

EPS_STUDENT, EPS_TEACHER, N_ITER = 0.05, 0.01, 100  # paper App. A.1


def _affinities(n: int, dtype_name: str):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(n)
    dtype = getattr(torch, dtype_name)
    x, y, xt, yt = (F.normalize(torch.randn(n, 64, generator=g, dtype=dtype), dim=1) for _ in range(4))
    return x @ y.T, xt @ yt.T


def _case(name: str, n: int, dtype_name: str, repeats: int, queue) -> None:
    import torch

    import ot as pot

    from sotalign.ot import klot, plan_kl, sinkhorn

    K_student, K_teacher = _affinities(n, dtype_name)
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run():
        if name == "klot_explicit_matvec":
            Ks = K_student.clone().requires_grad_()
            klot(Ks, K_teacher, EPS_STUDENT, EPS_TEACHER, N_ITER).backward()
        elif name == "klot_explicit_logsumexp":
            Ks = K_student.clone().requires_grad_()
            klot(Ks, K_teacher, EPS_STUDENT, EPS_TEACHER, N_ITER, solver="logsumexp").backward()
        elif name == "klot_unrolled_logsumexp":
            Ks = K_student.clone().requires_grad_()
            with torch.no_grad():
                log_t = sinkhorn(K_teacher, EPS_TEACHER, N_ITER, solver="logsumexp").log_plan
            plan_kl(log_t, sinkhorn(Ks, EPS_STUDENT, N_ITER, solver="logsumexp").log_plan).backward()
        elif name == "sinkhorn_ours":
            sinkhorn(K_teacher, EPS_TEACHER, N_ITER)
        elif name == "sinkhorn_pot":
            a = torch.full((n,), 1.0 / n, dtype=K_teacher.dtype)
            pot.bregman.sinkhorn_log(a, a, -K_teacher, EPS_TEACHER, numItermax=N_ITER, stopThr=0.0, warn=False)
        else:
            raise ValueError(name)

    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    extra_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib
    queue.put({"seconds": min(times), "extra_mib": extra_kib / 1024})


def measure(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench_output/bench.json"))
    args = parser.parse_args()

    results = []
    klot_cases = ("klot_explicit_matvec", "klot_explicit_logsumexp", "klot_unrolled_logsumexp")
    print(f"KLOT forward+backward, eps {EPS_STUDENT}/{EPS_TEACHER}, {N_ITER} iterations, float32 (peak = RSS above inputs)")
    print("| n | explicit matvec s | explicit logsumexp s | unrolled logsumexp s | unrolled / explicit matvec time | unrolled / explicit logsumexp time | explicit MiB | unrolled MiB | unrolled / explicit memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        row = {c: measure(_case, c, n, "float32", args.repeats) for c in klot_cases}
        fast, lse, unrolled = (row[c] for c in klot_cases)
        print(
            f"| {n} | {fast['seconds']:.3f} | {lse['seconds']:.3f} | {unrolled['seconds']:.3f} | "
            f"{unrolled['seconds'] / fast['seconds']:.1f}x | {unrolled['seconds'] / lse['seconds']:.1f}x | "
            f"{fast['extra_mib']:.0f} | {unrolled['extra_mib']:.0f} | "
            f"{unrolled['extra_mib'] / fast['extra_mib']:.1f}x |"
        )
        results.append({"bench": "klot", "n": n, **{c: row[c] for c in klot_cases}})

    print(f"\nSinkhorn forward at eps {EPS_TEACHER}, {N_ITER} iterations: ours (auto solver) vs POT sinkhorn_log")
    print("| n | dtype | ours s | POT s | POT/ours |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        for dtype in ("float32", "float64"):
            ours = measure(_case, "sinkhorn_ours", n, dtype, args.repeats)
            pot = measure(_case, "sinkhorn_pot", n, dtype, args.repeats)
            print(f"| {n} | {dtype} | {ours['seconds']:.3f} | {pot['seconds']:.3f} | {pot['seconds'] / ours['seconds']:.1f}x |")
            results.append({"bench": "sinkhorn", "n": n, "dtype": dtype, "ours": ours, "pot": pot})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
