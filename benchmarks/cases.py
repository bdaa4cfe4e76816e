"""Shared inputs of the benchmark cases: random unit embeddings at the paper's settings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS_STUDENT, EPS_TEACHER, N_ITER = 0.05, 0.01, 100  # paper App. A.1
JOINT_DIM = 1024  # paper 3.6: d = 1024


LATENT_DIM = 16  # embeddings vary along few directions, as real ones do


def unit_rows(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n unit vectors of R^d spread over a shared 16-d subspace (plus a little noise).

    Independent isotropic vectors in R^1024 would all be near-orthogonal (cosines within
    +-0.15), which no real embedding space is and which would let every Sinkhorn take its
    easiest float32 path; here cosines span about [-0.9, 0.9], so the teacher at eps = 0.01
    needs the float64 kernel, as with real embeddings.
    """
    basis = torch.randn(LATENT_DIM, d, generator=torch.Generator().manual_seed(0), dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, LATENT_DIM, generator=g, dtype=dtype) @ basis
    return F.normalize(latent + 0.1 * torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def student_and_teacher(n: int, d: int = JOINT_DIM, dtype: torch.dtype = torch.float32):
    """(student images, student texts, teacher images, teacher texts), n rows each."""
    return tuple(unit_rows(n, d, seed=n + k, dtype=dtype) for k in range(4))
