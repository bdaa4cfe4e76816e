"""The stage-2 optimisation loop (paper Algorithm 1, lines 3-10), shared by ``sotalign.fit``
and the contrastive teacher.

Each step draws a batch of pairs and, for methods that use them, a batch of unpaired images
and (independently drawn) unpaired texts, and descends the method's objective
(``sotalign.objectives``: SigLIP on the pairs, plus for SOTAlign ``alpha`` times a
divergence between the student's and the teacher's geometry on the unpaired batch). The
teacher's projections of the whole unpaired pool are computed once by the caller, so a step
only indexes them. Losses are read back to the host only every ``log_every`` steps. ``Checkpointing`` hands out the whole loop state every N steps
and resumes from one: a resumed run continues bit for bit like an uninterrupted one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sotalign.checks import InputError
from sotalign.config import PAPER_MAX_BATCH, PAPER_MAX_PAIRS_PER_BATCH, AlignConfig
from sotalign.distributed import DistributedContext
from sotalign.evaluation import retrieval
from sotalign.objectives import BatchRows, Stage2Inputs, Step, build_objective, embed
from sotalign.optim import build_optimizer, build_schedule

Callback = Callable[[int, dict[str, float]], None]


@dataclass
class Checkpointing:
    """Periodic loop state out (``save(step, state)``) and a state to resume from.

    ``state`` holds the heads, the SigLIP scalars, the optimiser, the schedule, the batch
    sampler's RNG, the best validation state so far and the history: everything a run needs
    to continue exactly. ``save`` must persist it before returning (the tensors are live).
    On a checkpoint step, ``save`` is called before the step's callback, and the step also
    logs and validates (without competing for the best state), so a checkpoint always comes
    with current metrics.
    """

    every: int = 0  # steps between checkpoints; 0 = never
    save: Callable[[int, dict], None] | None = None
    resume: dict | None = None  # a state given to ``save`` earlier: continue after its step

    def due(self, step: int) -> bool:
        return self.every > 0 and self.save is not None and step % self.every == 0


def batch_sizes(config: AlignConfig, n_pairs: int, n_images: int, n_texts: int) -> tuple[int, int, int]:
    """(pairs, unpaired images, unpaired texts) per step, capped by what exists (paper App. A.1)."""
    pairs = min(config.batch_pairs or PAPER_MAX_PAIRS_PER_BATCH, n_pairs)
    unpaired = config.batch_unpaired or max(1, PAPER_MAX_BATCH - pairs)
    return pairs, min(unpaired, n_images), min(unpaired, n_texts)


def _subset(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Rows of ``x`` drawn without replacement (all of them, unshuffled, when size == len)."""
    if size >= x.shape[0]:
        return torch.arange(x.shape[0], device=x.device)
    return torch.randperm(x.shape[0], generator=generator)[:size].to(x.device)


def _validate(image_head: nn.Module, text_head: nn.Module, inputs: Stage2Inputs) -> dict[str, float]:
    with torch.no_grad():
        scores = retrieval(
            embed(image_head, inputs.val_images),
            embed(text_head, inputs.val_texts),
            inputs.val_caption_image,
            image_groups=inputs.val_image_groups,
        )
    return {f"val/{k}": v for k, v in scores.items()}


def train_heads(
    image_head: nn.Module,
    text_head: nn.Module,
    siglip: nn.Module,
    inputs: Stage2Inputs,
    config: AlignConfig,
    callback: Callback | None = None,
    distributed: DistributedContext | None = None,
    checkpointing: Checkpointing | None = None,
) -> list[dict[str, float]]:
    """Train the heads (and SigLIP's scale and bias) in place; return the logged history.

    With validation pairs and ``config.select_best``, the heads end at the state with the
    best validation mean R@1 (recorded as ``best_step`` in the last history entry). With
    ``distributed``, every rank must call this with the same inputs and config: the ranks
    draw the same global batches and reduce gradients, so they stay identical.
    """
    unpaired = config.uses_unpaired
    if unpaired and inputs.unpaired_images is None:
        raise InputError(f"method {config.method!r} (divergence {config.divergence!r}) needs unpaired images and texts")
    objective = build_objective(config, inputs)
    checkpointing = checkpointing or Checkpointing()
    modules = [image_head, text_head, siglip]
    optimizer = build_optimizer(modules, config.optimizer, config.lr, config.weight_decay)
    schedule = build_schedule(optimizer, config.schedule, config.steps, config.warmup_steps)
    generator = torch.Generator().manual_seed(config.seed)
    n_pairs = inputs.paired_images.shape[0]
    n_img = inputs.unpaired_images.shape[0] if unpaired else 0
    n_txt = inputs.unpaired_texts.shape[0] if unpaired else 0
    b_pairs, b_img, b_txt = batch_sizes(config, n_pairs, n_img, n_txt)
    validating = inputs.val_images is not None
    best = (float("-inf"), 0, None)  # (val mean R@1, step, state)
    history: list[dict[str, float]] = []
    start = 1
    if checkpointing.resume is not None:
        state = checkpointing.resume
        for m, module_state in zip(modules, state["modules"]):
            m.load_state_dict(module_state)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        best, history, start = state["best"], list(state["history"]), state["step"] + 1

    for m in modules:
        m.train()
    for step in range(start, config.steps + 1):
        rows = BatchRows(_subset(inputs.paired_images, b_pairs, generator))
        if unpaired:
            rows.images = _subset(inputs.unpaired_images, b_img, generator)
            rows.texts = _subset(inputs.unpaired_texts, b_txt, generator)
        total, terms = objective(Step(image_head, text_head, siglip, inputs, rows, step, generator, distributed))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if distributed is not None:
            distributed.reduce_gradients(summed=[image_head, text_head], averaged=[siglip])
        optimizer.step()
        schedule.step()

        checkpoint = checkpointing.due(step)
        record: dict[str, float] = {}
        if step % config.log_every == 0 or step == config.steps or checkpoint:
            record.update({"loss/total": total.item(), "lr": schedule.get_last_lr()[0]})
            for name, value in terms.items():
                record[name if "/" in name else f"loss/{name}"] = float(torch.as_tensor(value).detach())
        evaluation = step % config.eval_every == 0 or step == config.steps
        if validating and (evaluation or checkpoint):
            record.update(_validate(image_head, text_head, inputs))
            score = record["val/mean_recall_at_1"]
            # only the eval_every steps compete, so that checkpointing never changes the chosen model
            if evaluation and config.select_best and score > best[0]:
                best = (score, step, copy.deepcopy([m.state_dict() for m in modules]))
        if record:
            record["step"] = step
            history.append(record)
        if checkpoint:
            checkpointing.save(
                step,
                {
                    "step": step,
                    "modules": [m.state_dict() for m in modules],
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "best": best,
                    "history": history,
                },
            )
        if record and callback is not None:
            callback(step, record)

    if best[2] is not None:
        for m, state in zip(modules, best[2]):
            m.load_state_dict(state)
        history[-1]["best_step"] = best[1]
    for m in modules:
        m.eval()
    return history
