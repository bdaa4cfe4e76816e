"""Sinkhorn alone: ours vs POT's ``sinkhorn_log`` (same epsilon, same iterations), one iteration against
the machine's memory bandwidth, and the kernel's exp.

The matvec iteration is two products over the n x m kernel (E v, then u^T E) and little else, so its
floor is the time to read the kernel: twice where the products run apart, once where each group of rows
serves both while in cache (the one pass a CPU solve takes). The fraction of those bounds it reaches
says how much a faster implementation could still gain. The log-sum-exp iteration computes n m
exponentials per half-step and is compute-bound instead; it is shown against the same byte counts.
"""

from __future__ import annotations

from benchmarks.cases import EPS_TEACHER, N_ITER, unit_rows
from benchmarks.harness import cell, fmt, measure, measure_counts, ratio, table

BANDWIDTH_BYTES = 1 << 30  # 1 GiB copied: far beyond every cache


def sinkhorn_case(impl: str, n: int, dtype: str, eps: float = EPS_TEACHER, n_iter: int = N_ITER):
    import ot as pot
    import torch

    from sotalign.ot import sinkhorn
    from sotalign.ot_blockwise import sinkhorn_potentials

    x, y = unit_rows(n, 1024, 1, getattr(torch, dtype)), unit_rows(n, 1024, 2, getattr(torch, dtype))
    K = x @ y.T
    marginal = torch.full((n,), 1.0 / n, dtype=K.dtype)
    return {
        "ours": lambda: sinkhorn(K, eps, n_iter),
        "ours_blockwise": lambda: sinkhorn_potentials(x, y, eps, n_iter),
        "pot": lambda: pot.bregman.sinkhorn_log(
            marginal, marginal, -K, eps, numItermax=n_iter, stopThr=0.0, warn=False
        ),
    }[impl]


FORMS = ("torch's GEMV", "split", "one pass")  # how the matvec iteration reads its kernel (iteration_case)


def iteration_case(solver: str, n: int, eps: float, n_iter: int, form: str = "one pass"):
    """``n_iter`` Sinkhorn iterations on half-steps built beforehand (the kernel build is not timed). ``form``:
    torch's own threaded GEMV twice per iteration, the two products split by rows over the threads
    (``sotalign.matvec``), or the compiled one pass that the solver takes on a CPU."""
    import sys

    from sotalign import matvec
    from sotalign.ot import _logsumexp_ops, _matvec_ops, potentials

    if form == "torch's GEMV":
        matvec.MIN_SPLIT_NUMEL = sys.maxsize  # this case's own process: no kernel is split

    logits = (unit_rows(n, 1024, 1) @ unit_rows(n, 1024, 2).T) / eps
    if solver == "logsumexp":
        ops = _logsumexp_ops(logits)
    else:
        ops = _matvec_ops(logits)
        if form == "split":
            ops = ops._replace(iterate=None)
    like = logits.new_zeros(())
    return lambda: potentials(ops, logits.shape, like, n_iter, None, False, 10)


def copy_case():
    import torch

    src = torch.ones(BANDWIDTH_BYTES // 4)
    dst = torch.zeros_like(src)  # pages touched now, not during the timed copy
    return lambda: dst.copy_(src)


EXP_ENTRIES = 1 << 26  # 64M float32 entries (256 MiB): the size of a kernel at n = 8192


def exp_case(impl: str, low: float):
    """exp of ``EXP_ENTRIES`` float32 values spread evenly over [low, 0], in place on a fresh copy:
    torch's ``exp_`` or ``sotalign.ot.exp_`` (results below e^-87 set to 0)."""
    import torch

    from sotalign.ot import exp_

    values = torch.linspace(low, 0.0, EXP_ENTRIES)
    work = torch.empty_like(values)
    run = {"torch": torch.Tensor.exp_, "flushed": exp_}[impl]
    return lambda: run(work.copy_(values))


def _exp(repeats: int) -> tuple[str, list[dict]]:
    """The kernel's exp over a plain range and over a teacher's at eps* = 0.01 (cosines in [-0.9, 0.9]:
    range 180), torch's own against the flushed one."""
    rows, records = [], []
    for low, what in ((-80.0, "plain (student)"), (-180.0, "guarded (teacher at eps* = 0.01)")):
        res = {
            impl: measure("benchmarks.sinkhorn:exp_case", impl=impl, low=low, repeats=repeats)
            for impl in ("torch", "flushed")
        }
        rows.append(
            [
                f"[{low:.0f}, 0] {what}",
                cell(res["torch"], "seconds"),
                cell(res["flushed"], "seconds"),
                fmt(ratio(res["torch"], res["flushed"], "seconds"), ".1f", "x"),
            ]
        )
        records.append({"bench": "exp", "low": low, **res})
    text = f"exp of {EXP_ENTRIES >> 20}M float32 entries (with a copy of them), in place\n\n" + table(
        ["inputs", "torch exp_ s", "sotalign.ot.exp_ s", "speed-up"], rows
    )
    return text, records


def _vs_pot(sizes: list[int], repeats: int) -> tuple[str, list[dict]]:
    rows, records = [], []
    for n in sizes:
        for dtype in ("float32", "float64"):
            res = {
                impl: measure("benchmarks.sinkhorn:sinkhorn_case", impl=impl, n=n, dtype=dtype, repeats=repeats)
                for impl in ("ours", "ours_blockwise", "pot")
            }
            rows.append(
                [
                    str(n),
                    dtype,
                    cell(res["ours"], "seconds"),
                    cell(res["ours_blockwise"], "seconds"),
                    cell(res["pot"], "seconds"),
                    fmt(ratio(res["pot"], res["ours"], "seconds"), ".1f", "x"),
                    fmt(ratio(res["pot"], res["ours_blockwise"], "seconds"), ".1f", "x"),
                ]
            )
            records.append({"bench": "sinkhorn", "n": n, "dtype": dtype, **res})
    text = (
        f"Sinkhorn forward, eps {EPS_TEACHER}, {N_ITER} iterations (no tolerance): ours (dense, auto solver; blockwise, "
        "from the embeddings) vs POT sinkhorn_log\n\n"
        + table(["n", "dtype", "ours dense s", "ours blockwise s", "POT s", "POT / dense", "POT / blockwise"], rows)
    )
    return text, records


def _bandwidth(sizes: list[int], repeats: int) -> tuple[str, list[dict]]:
    copy = measure("benchmarks.sinkhorn:copy_case", repeats=repeats)
    bandwidth = 2 * BANDWIDTH_BYTES / copy["seconds"]  # read + write
    rows, records = [], [{"bench": "copy_bandwidth", "bytes_per_s": bandwidth}]
    # (solver, epsilon, form, kernel): the student's plain float32 kernel read each way, the teacher's guarded
    # one as the solver reads it, the reference's log-sum-exp form
    cases = (
        *(("matvec", 0.05, form, "plain") for form in FORMS),
        ("matvec", 0.01, "one pass", "guarded"),
        ("logsumexp", 0.05, "", ""),
    )
    for solver, eps, form, kernel in cases:
        for n in sizes:
            short, long = measure_counts(
                "benchmarks.sinkhorn:iteration_case",
                "n_iter",
                (5, 25),
                solver=solver,
                n=n,
                eps=eps,
                **({"form": form} if form else {}),
                repeats=repeats,
            )
            if "error" in short or "error" in long:
                continue
            per_iter = (long["seconds"] - short["seconds"]) / 20
            one_read = n * n * 4 / bandwidth  # the float32 kernel read once
            rows.append(
                [
                    solver,
                    f"float32 {kernel}".strip(),
                    form,
                    str(n),
                    f"{1e3 * per_iter:.1f}",
                    f"{100 * 2 * one_read / per_iter:.0f}%",
                    f"{100 * one_read / per_iter:.0f}%",
                ]
            )
            records.append(
                {
                    "bench": "iteration",
                    "solver": solver,
                    "epsilon": eps,
                    "form": form,
                    "n": n,
                    "seconds_per_iteration": per_iter,
                    "one_read_seconds": one_read,
                }
            )
    text = (
        f"One Sinkhorn iteration (n x n, from 25 minus 5 iterations) against the time to read its float32 kernel "
        f"twice (the two products' bound) and once (any iteration's), at the copy bandwidth "
        f"({bandwidth / 1e9:.1f} GB/s measured, 1 GiB copy)\n\n"
        + table(["solver", "kernel", "form", "n", "ms / iteration", "of two reads", "of one read"], rows)
    )
    return text, records


def run(sizes: list[int], bandwidth_sizes: list[int], repeats: int) -> tuple[str, list[dict]]:
    pot_text, pot_records = _vs_pot(sizes, repeats)
    bw_text, bw_records = _bandwidth(bandwidth_sizes, repeats)
    exp_text, exp_records = _exp(repeats)
    return "\n\n".join([pot_text, bw_text, exp_text]), pot_records + bw_records + exp_records
