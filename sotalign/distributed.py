"""Data-parallel stage 2 over a torch.distributed process group (what Ray Train workers run).

Every rank draws the same global batch indices and embeds only its slice; ``gather``
concatenates the slices of all ranks while the local slice keeps its gradient, so SigLIP and
the OT plan couple the whole global batch, as on one big GPU. Each rank then holds the loss
of the global batch with gradients flowing through its own rows only: summing the heads'
gradients over ranks gives exactly the single-process gradient, while parameters that every
rank differentiates in full (SigLIP's scale and bias) are averaged. Plain torch.distributed,
no Ray: the orchestrator only creates the process group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from sotalign.checks import InputError


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int

    @classmethod
    def from_process_group(cls) -> DistributedContext:
        if not dist.is_available() or not dist.is_initialized():
            raise InputError("torch.distributed has no initialised process group")
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of the global row indices (sizes may differ by one)."""
        return torch.tensor_split(rows, self.world_size)[self.rank]

    def sizes(self, total: int) -> list[int]:
        """Every rank's number of rows of a global batch of ``total`` (``shard``'s split: the first
        ``total % world_size`` ranks take one more), known on every rank without an exchange."""
        base, extra = divmod(total, self.world_size)
        return [base + (rank < extra) for rank in range(self.world_size)]

    def gather(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """All ranks' slices of a global batch of ``total`` rows, in rank order; the local slice is
        ``local`` itself (keeps its grad). One all-gather, no host sync: the sizes are ``sizes(total)``."""
        sizes = self.sizes(total)
        if local.shape[0] != sizes[self.rank]:
            raise InputError(f"rank {self.rank} holds {local.shape[0]} rows of {total}, expected {sizes[self.rank]}")
        padded = local.detach().new_zeros(max(sizes), *local.shape[1:])
        padded[: local.shape[0]] = local.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        parts = [part[:size] for part, size in zip(parts, sizes)]
        parts[self.rank] = local
        return torch.cat(parts)

    def reduce_gradients(self, summed: Iterable[nn.Module], averaged: Iterable[nn.Module]) -> None:
        """Sum the gradients of ``summed`` modules and average those of ``averaged`` over ranks."""
        for modules, scale in ((summed, 1.0), (averaged, 1.0 / self.world_size)):
            for module in modules:
                for p in module.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # gloo has no AVG
                        p.grad.mul_(scale)
