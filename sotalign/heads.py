"""Alignment layers f (images) and g (texts): the only trained weights of stage 2.

``linear`` is the paper's choice ("more robust in our low-supervision regime", paper.md
3.6). ``mlp`` is a residual MLP: a linear map plus a GELU MLP whose output layer starts at
zero, so that at initialisation it *is* the linear map (and can start from the teacher).
``relative`` is not trained: ASIF's sparse similarities to anchor embeddings
(``sotalign.training_free``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sotalign.checks import InputError, check_choice

HEAD_KINDS = ("linear", "mlp")
HEAD_INITS = ("random", "teacher")


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


class RelativeHead(nn.Module):
    """x -> the ``top_k`` largest cosines between x and the anchors (others 0), raised to ``power``
    (ASIF); the anchors (out_dim x in_dim) are a buffer, saved with the model."""

    def __init__(self, in_dim: int, out_dim: int, top_k: int, power: float):
        super().__init__()
        self.top_k, self.power = min(top_k, out_dim), power
        self.register_buffer("anchors", torch.zeros(out_dim, in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sims = nn.functional.normalize(x, dim=-1) @ nn.functional.normalize(self.anchors, dim=-1).T
        top = sims.topk(self.top_k, dim=-1)
        return torch.zeros_like(sims).scatter_(-1, top.indices, top.values.clamp_min(0).pow(self.power))


def build_head(
    kind: str,
    in_dim: int,
    out_dim: int,
    hidden_dim: int | None = None,
    bias: bool = True,
    top_k: int = 800,
    power: float = 8.0,
) -> nn.Module:
    """A head by name; ``hidden_dim`` (MLP only) defaults to ``out_dim``; ``top_k`` and ``power``
    are the relative head's (ASIF's defaults)."""
    check_choice(kind, (*HEAD_KINDS, "relative"), "head kind")
    if kind == "linear":
        return LinearHead(in_dim, out_dim, bias=bias)
    if kind == "relative":
        return RelativeHead(in_dim, out_dim, top_k, power)
    return MLPHead(in_dim, out_dim, hidden_dim or out_dim)


@torch.no_grad()
def init_from_projection(head: nn.Module, projection: torch.Tensor) -> None:
    """Start a head's linear map at a teacher projection (in_dim x d').

    The first d' output units copy the teacher; any further units keep their random init
    shrunk 100x, so the head starts as the teacher but can still grow new directions
    (exact zeros would be a saddle: their gradient through the cosine is zero). The copied
    block is rescaled to the RMS of the default init: outputs are compared by cosine, so a
    global scale changes nothing at the start, but optimisers with fixed-size steps (Lion)
    would otherwise barely move large teacher weights.
    """
    linear: nn.Linear = head.linear
    in_dim, d = projection.shape
    if in_dim != linear.in_features or d > linear.out_features:
        raise InputError(
            f"cannot initialise a {linear.in_features}->{linear.out_features} head from a "
            f"{in_dim}->{d} teacher projection (teacher dim must be <= head dim)"
        )
    target_rms = 1.0 / math.sqrt(3 * in_dim)  # RMS of nn.Linear's U(-1/sqrt(in), 1/sqrt(in)) init
    w = projection.T.to(linear.weight.dtype)
    linear.weight[d:] *= 0.01
    linear.weight[:d] = w * (target_rms / w.pow(2).mean().sqrt().clamp_min(1e-12))
    if linear.bias is not None:
        linear.bias.zero_()
