"""Input preprocessing applied to frozen-encoder embeddings before any projection.

The paper says the teacher "assumes that the data is first centered and normalized" but not
in which order nor with which mean (paper.md 7, ambiguity 5). We L2-normalise each raw
embedding first (encoders differ wildly in norm), then subtract a mean of the normalised
embeddings, and store both choices with the teacher and the model so that training,
evaluation and a reloaded model all see the same inputs.
"""

from __future__ import annotations

import torch
from torch import nn


class Preprocessing(nn.Module):
    """x -> normalise(x) - mean. ``mean`` is a buffer (zeros when centring is off)."""

    def __init__(self, dim: int, normalize: bool = True, mean: torch.Tensor | None = None):
        super().__init__()
        self.normalize = normalize
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.detach().clone().float())

    @classmethod
    def fit(cls, x: torch.Tensor, normalize: bool = True, center: bool = True) -> Preprocessing:
        """Estimate the mean of (normalised) ``x``; ``center=False`` keeps a zero mean."""
        prep = cls(x.shape[1], normalize)
        if center:
            prep.mean.copy_(prep.normalized(x).double().mean(0).float())
        return prep

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1) if self.normalize else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalized(x) - self.mean.to(device=x.device, dtype=x.dtype)
