"""The paper's scale on this machine: blockwise KLOT at n up to 32768, and one training step with the
paper's batch (10k pairs + 22k unpaired, App. A.1), measured; 2000 steps and a GPU projected from them.

Dense KLOT would need about ten n x m float32 matrices (40 GiB at n = 32768); the blockwise path
holds one kernel at a time (float32 for the student, float64 for the teacher at eps = 0.01).
The GPU line is a floor, not a measurement: the bytes the Sinkhorn iterations must stream through
memory, divided by the accelerator's peak bandwidth (no GPU was lent to measure it).
"""

from __future__ import annotations

from benchmarks.cases import EPS_STUDENT, EPS_TEACHER, N_ITER, student_and_teacher
from benchmarks.harness import cell, measure, table
from benchmarks.training import PAPER_PAIRS_SHARE

PAPER_BATCH = 32_000  # paper App. A.1: 10k pairs + 22k unpaired
PAPER_STEPS = 2000  # paper App. A.1
GPU_BANDWIDTH = {"H100 SXM (3.35 TB/s)": 3.35e12, "H200 (4.8 TB/s)": 4.8e12}  # vendor peak HBM bandwidth


def blockwise_case(n: int):
    from sotalign.ot_blockwise import klot_blockwise

    xs, ys, xt, yt = student_and_teacher(n)

    def run():
        a, b = xs.clone().requires_grad_(), ys.clone().requires_grad_()
        klot_blockwise(a, b, xt, yt, EPS_STUDENT, EPS_TEACHER, N_ITER)[0].backward()

    return run


def sinkhorn_bytes(n: int, teacher_too: bool) -> float:
    """Bytes the matvec iterations stream: 2 reads of the n x n kernel per iteration (float32 student, float64 teacher)."""
    return N_ITER * 2 * n * n * (4 + (8 if teacher_too else 0))


def run(sizes: list[int], paper_step: bool = True) -> tuple[str, list[dict]]:
    rows, records = [], []
    for n in sizes:
        res = measure("benchmarks.scale:blockwise_case", n=n, repeats=1, warmup=False)
        rows.append([str(n), cell(res, "seconds", ".1f"), cell(res, "peak_mib", ".0f"), f"{n * n * 4 / 2**20:.0f}"])
        records.append({"bench": "klot_scale", "n": n, **res})
    text = (
        f"Blockwise KLOT forward + backward at scale (n x 1024 embeddings, eps {EPS_STUDENT} / {EPS_TEACHER}, {N_ITER} iterations, "
        "one run)\n\n" + table(["n", "seconds", "peak MiB", "one n x n float32 matrix, MiB"], rows)
    )

    if not paper_step:
        return text, records
    pairs = round(PAPER_BATCH * PAPER_PAIRS_SHARE)
    unpaired = PAPER_BATCH - pairs
    short, long = (
        measure(
            "benchmarks.training:training_case",
            d_image=1280,
            d_text=384,
            batch=PAPER_BATCH,
            steps=k,
            fresh_teacher=True,  # 22k drawn per step from a 1M pool: the teacher's plan is new every step
            repeats=1,
            warmup=False,
        )
        for k in (1, 2)
    )
    records.append({"bench": "paper_step", "pairs": pairs, "unpaired": unpaired, "one_step": short, "two_steps": long})
    if "error" in short or "error" in long:
        return text + f"\n\nPaper-size step failed: {short.get('error') or long.get('error')}", records
    step = long["seconds"] - short["seconds"]
    text += (
        f"\n\nOne training step at the paper's batch ({pairs} pairs + {unpaired} unpaired, 1280 / 384 -> 1024, "
        f"teacher and student plans solved every step): {step:.1f} s and {long['peak_mib'] / 1024:.1f} GiB peak on "
        f"this CPU; {PAPER_STEPS} steps = {PAPER_STEPS * step / 3600:.1f} h (+ {short['seconds'] - step:.0f} s set-up)."
    )
    gpu_rows = [
        [
            name,
            f"{sinkhorn_bytes(unpaired, True) / bw * 1e3:.0f}",
            f"{PAPER_STEPS * sinkhorn_bytes(unpaired, True) / bw / 60:.1f}",
        ]
        for name, bw in GPU_BANDWIDTH.items()
    ]
    text += (
        "\n\nGPU floor for the teacher's and the student's Sinkhorn (the per-step part that grows as n^2): "
        f"{sinkhorn_bytes(unpaired, True) / 1e9:.0f} GB streamed per step at n = {unpaired}\n\n"
        + table(["GPU", "ms per step (floor)", f"minutes for {PAPER_STEPS} steps (floor)"], gpu_rows)
    )
    return text, records
