"""The paper's scale on this machine: blockwise KLOT forward + backward at n up to 32768 (the paper's
training step itself: ``benchmarks.paper_step``).

Dense KLOT holds three n x m float32 matrices (12 GiB at n = 32768); the blockwise path holds one
float32 kernel at a time, the teacher's included (guarded at eps* = 0.01: ``sotalign.ot``).
"""

from __future__ import annotations

from benchmarks.cases import EPS_STUDENT, EPS_TEACHER, N_ITER, student_and_teacher
from benchmarks.harness import cell, measure, table


def blockwise_case(n: int):
    from sotalign.ot_blockwise import klot_blockwise

    xs, ys, xt, yt = student_and_teacher(n)

    def run():
        a, b = xs.clone().requires_grad_(), ys.clone().requires_grad_()
        klot_blockwise(a, b, xt, yt, EPS_STUDENT, EPS_TEACHER, N_ITER)[0].backward()

    return run


def run(sizes: list[int]) -> tuple[str, list[dict]]:
    rows, records = [], []
    for n in sizes:
        res = measure("benchmarks.scale:blockwise_case", n=n, repeats=1, warmup=False)
        rows.append([str(n), cell(res, "seconds", ".1f"), cell(res, "peak_mib", ".0f"), f"{n * n * 4 / 2**20:.0f}"])
        records.append({"bench": "klot_scale", "n": n, **res})
    text = (
        f"Blockwise KLOT forward + backward at scale (n x 1024 embeddings, eps {EPS_STUDENT} / {EPS_TEACHER}, {N_ITER} iterations, "
        "one run)\n\n" + table(["n", "seconds", "peak MiB", "one n x n float32 matrix, MiB"], rows)
    )

    return text, records
