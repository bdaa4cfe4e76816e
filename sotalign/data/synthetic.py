"""A synthetic alignment benchmark for tests and the first demo.

A shared latent z (a mixture of well-separated clusters plus within-cluster variation) is
seen through two different random non-linear maps (the "image" and the "text" encoder),
each adding noise and view-specific nuisance factors. Paired rows share their latent;
unpaired images and unpaired texts come from disjoint latents (no hidden pairing), yet
their distributions share the latent's structure, which is what a semi-supervised method
can exploit. Retrieval on held-out pairs needs the within-cluster detail too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticBenchmark:
    paired_images: torch.Tensor
    paired_texts: torch.Tensor
    unpaired_images: torch.Tensor
    unpaired_texts: torch.Tensor
    val_images: torch.Tensor
    val_texts: torch.Tensor
    test_images: torch.Tensor
    test_texts: torch.Tensor


def _random_view(latent_dim: int, nuisance_dim: int, out_dim: int, hidden: int, g: torch.Generator):
    w1 = torch.randn(latent_dim + nuisance_dim, hidden, generator=g) / (latent_dim + nuisance_dim) ** 0.5
    b1 = 0.5 * torch.randn(hidden, generator=g)
    w2 = torch.randn(hidden, out_dim, generator=g) / hidden**0.5

    def view(z: torch.Tensor, noise: float) -> torch.Tensor:
        nuisance = torch.randn(z.shape[0], nuisance_dim, generator=g)
        h = torch.tanh(torch.cat([z, nuisance], 1) @ w1 + b1)
        return h @ w2 + noise * torch.randn(z.shape[0], out_dim, generator=g)

    return view


def make_synthetic(
    n_pairs: int = 64,
    n_unpaired: int = 4000,
    n_val: int = 250,
    n_test: int = 500,
    *,
    image_dim: int = 96,
    text_dim: int = 64,
    latent_dim: int = 12,
    nuisance_dim: int = 8,
    n_clusters: int = 24,
    cluster_spread: float = 0.5,
    noise: float = 0.05,
    seed: int = 0,
) -> SyntheticBenchmark:
    """Draw a benchmark; the views (the "encoders") depend only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, latent_dim, generator=g) * 1.5
    image_view = _random_view(latent_dim, nuisance_dim, image_dim, 256, g)
    text_view = _random_view(latent_dim, nuisance_dim, text_dim, 256, g)

    def latents(n: int) -> torch.Tensor:
        c = torch.randint(n_clusters, (n,), generator=g)
        return centres[c] + cluster_spread * torch.randn(n, latent_dim, generator=g)

    z_pairs, z_val, z_test = latents(n_pairs), latents(n_val), latents(n_test)
    z_img, z_txt = latents(n_unpaired), latents(n_unpaired)  # disjoint latents: no hidden pairs
    return SyntheticBenchmark(
        paired_images=image_view(z_pairs, noise),
        paired_texts=text_view(z_pairs, noise),
        unpaired_images=image_view(z_img, noise),
        unpaired_texts=text_view(z_txt, noise),
        val_images=image_view(z_val, noise),
        val_texts=text_view(z_val, noise),
        test_images=image_view(z_test, noise),
        test_texts=text_view(z_test, noise),
    )
