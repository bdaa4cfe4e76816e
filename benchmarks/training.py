"""End to end: stage-2 training steps per second at the paper's layer sizes, and chunked retrieval.

A step is ``sotalign.stage2.train_heads``' own step (SigLIP on the pairs + alpha * KLOT on the
unpaired batch, backward, Lion) with linear heads from the encoders' widths to d = 1024 (paper
3.6). Batches split pairs : unpaired as the paper's 10k : 22k. Every unpaired sample is drawn
in every step, as at the paper's sizes, so the teacher plan is solved once (its cache) and the
student's every step; ``fresh teacher`` draws half the pool, which solves both each step.
"""

from __future__ import annotations

from benchmarks.cases import JOINT_DIM, unit_rows
from benchmarks.harness import cell, fmt, measure, measure_counts, table

ENCODER_WIDTHS = {
    "1280 / 384": (1280, 384),
    "2048 / 4096": (2048, 4096),
}  # (d_image, d_text): e.g. EfficientNet / MiniLM, ResNet-50 / a 4096-d LLM
PAPER_PAIRS_SHARE = 10_000 / 32_000  # paper App. A.1: up to 10k pairs in batches of up to 32k
TEACHER_DIM = (
    512  # CCA teacher width (its projections of the pool are precomputed, so it only sets the teacher matmuls)
)
STEPS = (1, 4)  # a step's cost = (time of 4 steps - time of 1) / 3: no set-up, no one-off teacher solve


def batch_split(batch: int) -> tuple[int, int]:
    pairs = round(batch * PAPER_PAIRS_SHARE)
    return pairs, batch - pairs


def training_case(d_image: int, d_text: int, batch: int, steps: int, fresh_teacher: bool = False):
    from sotalign.config import AlignConfig
    from sotalign.heads import build_head
    from sotalign.losses import SigLIPLoss
    from sotalign.objectives import Stage2Inputs
    from sotalign.stage2 import train_heads

    pairs, unpaired = batch_split(batch)
    pool = 2 * unpaired if fresh_teacher else unpaired
    inputs = Stage2Inputs(
        paired_images=unit_rows(pairs, d_image, 1),
        paired_texts=unit_rows(pairs, d_text, 2),
        unpaired_images=unit_rows(pool, d_image, 3),
        unpaired_texts=unit_rows(pool, d_text, 4),
        teacher_images=unit_rows(pool, TEACHER_DIM, 5),
        teacher_texts=unit_rows(pool, TEACHER_DIM, 6),
    )
    config = AlignConfig(
        steps=steps,
        batch_pairs=pairs,
        batch_unpaired=unpaired,
        alpha=1.0,
        log_every=10**9,
        eval_every=10**9,
        device="cpu",
    )

    def run():
        heads = build_head("linear", d_image, JOINT_DIM), build_head("linear", d_text, JOINT_DIM)
        train_heads(*heads, SigLIPLoss(), inputs, config)

    return run


def retrieval_case(n_images: int, captions: int, chunk_size: int):
    import torch

    from sotalign.evaluation import retrieval

    images, texts = unit_rows(n_images, JOINT_DIM, 1), unit_rows(n_images * captions, JOINT_DIM, 2)
    owner = torch.arange(n_images).repeat_interleave(captions)
    return lambda: retrieval(images, texts, owner, chunk_size=chunk_size)


def _per_step(d_image: int, d_text: int, batch: int, fresh_teacher: bool, repeats: int) -> dict:
    short, long = measure_counts(
        "benchmarks.training:training_case",
        "steps",
        STEPS,
        d_image=d_image,
        d_text=d_text,
        batch=batch,
        fresh_teacher=fresh_teacher,
        repeats=repeats,
    )
    if "error" in short or "error" in long:
        return short if "error" in short else long
    return {"seconds": (long["seconds"] - short["seconds"]) / (STEPS[1] - STEPS[0]), "peak_mib": long["peak_mib"]}


def run(batches: list[int], repeats: int) -> tuple[str, list[dict]]:
    rows, records = [], []
    for name, (d_image, d_text) in ENCODER_WIDTHS.items():
        for batch in batches:
            pairs, unpaired = batch_split(batch)
            res = {fresh: _per_step(d_image, d_text, batch, fresh, repeats) for fresh in (False, True)}
            rows.append(
                [name, f"{pairs} + {unpaired}"]
                + [fmt(1 / r["seconds"], ".2f") if "error" not in r else "failed" for r in res.values()]
                + [cell(res[True], "peak_mib", ".0f")]
            )
            records.append(
                {
                    "bench": "training",
                    "encoders": name,
                    "pairs": pairs,
                    "unpaired": unpaired,
                    "cached_teacher": res[False],
                    "fresh_teacher": res[True],
                }
            )
    text = (
        "Stage-2 training (SigLIP + KLOT, Lion), linear heads to d = 1024, float32, "
        "per-step time from runs of 4 and 1 steps\n\n"
        + table(
            [
                "d_image / d_text",
                "pairs + unpaired per step",
                "steps/s (teacher cached)",
                "steps/s (fresh teacher)",
                "peak MiB",
            ],
            rows,
        )
    )
    ev_rows = []
    for chunk in (1024, 25_000):
        res = measure(
            "benchmarks.training:retrieval_case", n_images=5000, captions=5, chunk_size=chunk, repeats=repeats
        )
        ev_rows.append([str(chunk), cell(res, "seconds"), cell(res, "peak_mib", ".0f")])
        records.append({"bench": "retrieval", "images": 5000, "texts": 25_000, "chunk_size": chunk, **res})
    text += (
        "\n\nRetrieval evaluation, 5k images x 25k captions (5 each), d = 1024: query chunks of 1024 vs one chunk\n\n"
        + table(["chunk", "seconds", "peak MiB"], ev_rows)
    )
    return text, records
