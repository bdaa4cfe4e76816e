"""Shared inputs of the benchmark cases: random unit embeddings at the paper's settings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS_STUDENT, EPS_TEACHER, N_ITER = 0.05, 0.01, 100  # paper App. A.1
JOINT_DIM = 1024  # paper 3.6: d = 1024


def unit_rows(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n random points on the unit sphere of R^d (cosine affinities of such rows lie in [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def student_and_teacher(n: int, d: int = JOINT_DIM, dtype: torch.dtype = torch.float32):
    """(student images, student texts, teacher images, teacher texts), n rows each."""
    return tuple(unit_rows(n, d, seed=n + k, dtype=dtype) for k in range(4))
