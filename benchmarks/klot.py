"""KLOT forward + backward: explicit gradient (blockwise and dense) vs autograd through the unrolled
Sinkhorn (same iterations), and POT's ``sinkhorn_log`` forward of one plan alone.

Every case starts from the embeddings (n x 1024, the paper's joint space) and ends with their
gradients, so the affinity matmuls are part of each. Unrolling stores every iteration: where it
cannot fit (n >= 4096 here) its time and memory at 100 iterations are extrapolated linearly from
runs at 10 and 20 iterations, and the extrapolation is checked against a real 100-iteration run at
the largest n that fits.
"""

from __future__ import annotations

from benchmarks.cases import EPS_STUDENT, EPS_TEACHER, N_ITER, student_and_teacher
from benchmarks.harness import cell, fmt, measure, measure_counts, ratio, table

IMPLS = ("blockwise", "dense", "unrolled_logsumexp", "unrolled_matvec", "pot_forward")
UNROLLED_FULL_MAX_N = 2048  # beyond this, 100 unrolled log-sum-exp iterations need > 20 GiB


def klot_case(impl: str, n: int, n_iter: int = N_ITER):
    import ot as pot
    import torch

    from sotalign.ot import klot, plan_kl, sinkhorn
    from sotalign.ot_blockwise import klot_blockwise

    a, b, xt, yt = student_and_teacher(n)
    a.requires_grad_(), b.requires_grad_()  # the inputs, made before the peak is reset: not the case's memory

    def run():
        if impl == "blockwise":
            klot_blockwise(a, b, xt, yt, EPS_STUDENT, EPS_TEACHER, n_iter)[0].backward()
        elif impl == "dense":
            klot(a @ b.T, xt @ yt.T, EPS_STUDENT, EPS_TEACHER, n_iter).backward()
        elif impl.startswith("unrolled_"):
            solver = impl.removeprefix("unrolled_")
            with torch.no_grad():
                log_t = sinkhorn(xt @ yt.T, EPS_TEACHER, n_iter).log_plan
            plan_kl(log_t, sinkhorn(a @ b.T, EPS_STUDENT, n_iter, solver=solver).log_plan).backward()
        elif impl == "pot_forward":
            marginal = torch.full((n,), 1.0 / n)
            pot.bregman.sinkhorn_log(
                marginal, marginal, -(xt @ yt.T), EPS_TEACHER, numItermax=n_iter, stopThr=0.0, warn=False
            )
        else:
            raise ValueError(impl)
        # freed at the end, counted while they live: no run starts above the level its peak is taken from
        a.grad = b.grad = None

    return run


def _extrapolated(n: int, repeats: int) -> dict:
    """Unrolled log-sum-exp at 100 iterations from 10 and 20 (both grow linearly in iterations)."""
    r10, r20 = measure_counts(
        "benchmarks.klot:klot_case", "n_iter", (10, 20), impl="unrolled_logsumexp", n=n, repeats=repeats
    )
    if "error" in r10 or "error" in r20:
        return r10 if "error" in r10 else r20
    grow = (N_ITER - 10) / 10
    return {key: r10[key] + (r20[key] - r10[key]) * grow for key in ("seconds", "peak_mib")} | {"extrapolated": True}


def run(sizes: list[int], repeats: int) -> tuple[str, list[dict]]:
    rows, records = [], []
    for n in sizes:
        res = {
            impl: measure("benchmarks.klot:klot_case", impl=impl, n=n, repeats=repeats)
            for impl in IMPLS
            if not (impl == "unrolled_logsumexp" and n > UNROLLED_FULL_MAX_N)
        }
        if n > UNROLLED_FULL_MAX_N:
            res["unrolled_logsumexp"] = _extrapolated(n, repeats)
        elif n == max(s for s in sizes if s <= UNROLLED_FULL_MAX_N):
            res["unrolled_check"] = _extrapolated(n, repeats)  # the extrapolation against the real run
        fast, unrolled = res["blockwise"], res["unrolled_logsumexp"]
        star = "*" if unrolled.get("extrapolated") else ""
        rows.append(
            [
                str(n),
                cell(fast, "seconds"),
                cell(res["dense"], "seconds"),
                cell(unrolled, "seconds") + star,
                cell(res["unrolled_matvec"], "seconds"),
                cell(res["pot_forward"], "seconds"),
                fmt(ratio(unrolled, fast, "seconds"), ".1f", "x"),
                fmt(ratio(res["pot_forward"], fast, "seconds"), ".2f", "x"),
                cell(fast, "peak_mib", ".0f"),
                cell(res["dense"], "peak_mib", ".0f"),
                cell(unrolled, "peak_mib", ".0f") + star,
                cell(res["unrolled_matvec"], "peak_mib", ".0f"),
                fmt(ratio(unrolled, fast, "peak_mib"), ".0f", "x"),
                fmt(ratio(res["dense"], fast, "peak_mib"), ".1f", "x"),
            ]
        )
        records.append({"bench": "klot", "n": n, **res})
    text = (
        f"KLOT forward + backward from n x 1024 embeddings, eps {EPS_STUDENT} / {EPS_TEACHER}, {N_ITER} iterations, float32; "
        "peak = the case's own max RSS above its inputs over the calls after the first (benchmarks/harness.py); "
        "* = extrapolated from 10 and 20 iterations\n\n"
        + table(
            [
                "n",
                "blockwise s",
                "dense s",
                "unrolled lse s",
                "unrolled matvec s",
                "POT fwd (1 plan) s",
                "unrolled lse / blockwise time",
                "POT fwd / blockwise time",
                "blockwise MiB",
                "dense MiB",
                "unrolled lse MiB",
                "unrolled matvec MiB",
                "unrolled lse / blockwise memory",
                "dense / blockwise memory",
            ],
            rows,
        )
    )
    firsts = [
        f"n = {r['n']}: {r['blockwise']['first_call_peak_mib']:.0f} MiB"
        for r in records
        if "first_call_peak_mib" in r["blockwise"]
    ]
    if firsts:  # what a process loads once (numba's compiled Sinkhorn loop where kernels are split) on top
        text += "\n\nBlockwise, first call in its process: " + ", ".join(firsts)
    checks = [r for r in records if "unrolled_check" in r]
    for r in checks:
        real, extra = r["unrolled_logsumexp"], r["unrolled_check"]
        if "error" not in real and "error" not in extra:
            text += (
                f"\n\nExtrapolation check at n = {r['n']}: unrolled lse measured {real['seconds']:.2f} s / {real['peak_mib']:.0f} MiB, "
                f"extrapolated {extra['seconds']:.2f} s / {extra['peak_mib']:.0f} MiB"
            )
    return text, records
