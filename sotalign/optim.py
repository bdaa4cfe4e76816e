"""Optimiser and learning-rate schedule for stage 2 (and the contrastive teacher).

Lion comes from timm (a dependency anyway) rather than being re-written here. Scalars and
biases (the SigLIP scale and bias, head biases) get no weight decay, as is standard.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sotalign.checks import check_choice

OPTIMIZERS = ("lion", "adamw")  # paper App. A.1: Lion; AdamW for comparison
SCHEDULES = ("cosine", "constant")  # paper App. A.1: cosine annealing


def build_optimizer(modules: list[nn.Module], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    check_choice(name, OPTIMIZERS, "optimizer")
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    from timm.optim import Lion  # imported lazily: timm pulls in torchvision

    return Lion(groups, lr=lr)


def build_schedule(optimizer: torch.optim.Optimizer, kind: str, steps: int, warmup_steps: int = 0):
    """Linear warm-up, then cosine annealing to 0 over ``steps`` (or a constant LR)."""
    check_choice(kind, SCHEDULES, "schedule")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
