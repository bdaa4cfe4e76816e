"""Stage 1: linear teachers fitted on the few image-text pairs (paper section 4, App. C.1).

* ``procrustes``: two-sided orthogonal Procrustes, SVD of A^T B (Prop. C.1).
* ``cca``: ridge CCA, SVD of (Sxx + reg I)^-1/2 Sxy (Syy + reg I)^-1/2 (Prop. C.2). Covariances
  are divided by n by default: the paper writes A^T A, but then the ridge 0.1 means something
  different for every n_pairs; with 1/n it is a fixed fraction of the unit-norm inputs'
  total variance (1), which is also what the third-party port does and what measured
  better on real data (findings.md: mean R@1 8.0 vs 6.4 at 150 pairs).
  ``cov_normalize=False`` gives the paper's literal A^T A.
* ``contrastive``: linear maps trained with SigLIP on the pairs, i.e. SAIL (paper eq. 8). It is
  trained by the stage-2 loop, so it is fitted where the config is, by the two-stage driver
  (``sotalign.two_stage.fit_contrastive_teacher``); this module holds the closed forms and the
  ``Teacher`` type that all three return.

Closed forms run in float64. Inputs are preprocessed (L2-normalised, then centred; see
``sotalign.preprocess``) and that preprocessing is stored with the teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sotalign.checks import InputError, as_embeddings, check_choice, check_pairs
from sotalign.io import atomic_path
from sotalign.preprocess import Preprocessing

CLOSED_FORMS = ("procrustes", "cca")
TEACHER_KINDS = (*CLOSED_FORMS, "contrastive")


class Teacher:
    """A frozen linear map of each modality into a shared d'-dimensional space."""

    def __init__(
        self,
        kind: str,
        image_projection: torch.Tensor,
        text_projection: torch.Tensor,
        image_prep: Preprocessing,
        text_prep: Preprocessing,
        correlations: torch.Tensor | None = None,
    ):
        self.kind = kind
        self.image_projection = image_projection  # (d_image, d')
        self.text_projection = text_projection  # (d_text, d')
        self.image_prep = image_prep
        self.text_prep = text_prep
        self.correlations = correlations  # singular values of the closed form (cca/procrustes)

    @property
    def dim(self) -> int:
        return self.image_projection.shape[1]

    def project_images(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        return self.image_prep(x) @ self.image_projection.to(x.device, x.dtype)

    def project_texts(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y)
        return self.text_prep(y) @ self.text_projection.to(y.device, y.dtype)

    def save(self, path: str | Path) -> None:
        tensors = {
            "image_projection": self.image_projection.contiguous(),
            "text_projection": self.text_projection.contiguous(),
            "image_mean": self.image_prep.mean.contiguous(),
            "text_mean": self.text_prep.mean.contiguous(),
        }
        if self.correlations is not None:
            tensors["correlations"] = self.correlations.contiguous()
        meta = {
            "format": "sotalign-teacher/1",
            "kind": self.kind,
            "normalize": json.dumps([self.image_prep.normalize, self.text_prep.normalize]),
        }
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Teacher:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as error:  # safetensors raises its own error types for a broken file
            raise InputError(f"{path} is not a readable safetensors file: {error}") from None
        if meta.get("format") != "sotalign-teacher/1":
            raise InputError(f"{path} is not a sotalign teacher file (metadata format {meta.get('format')!r})")
        t = load_file(str(path))
        norm_img, norm_txt = json.loads(meta["normalize"])
        return cls(
            meta["kind"],
            t["image_projection"],
            t["text_projection"],
            Preprocessing(t["image_mean"].shape[0], norm_img, t["image_mean"]),
            Preprocessing(t["text_mean"].shape[0], norm_txt, t["text_mean"]),
            t.get("correlations"),
        )


def _inv_sqrt(cov: torch.Tensor, reg: float, name: str) -> torch.Tensor:
    """(cov + reg I)^-1/2 by eigendecomposition; refuses a singular matrix when reg == 0."""
    evals, evecs = torch.linalg.eigh(cov + reg * torch.eye(cov.shape[0], dtype=cov.dtype))
    if evals.min() <= 1e-12 * evals.max().clamp_min(1e-300):
        raise InputError(f"the {name} covariance is singular (fewer pairs than dimensions?); use a ridge reg > 0")
    return (evecs * evals.rsqrt()) @ evecs.T


def _procrustes(a: torch.Tensor, b: torch.Tensor, dim: int):
    u, s, vh = torch.linalg.svd(a.T @ b, full_matrices=False)
    return u[:, :dim], vh[:dim].T, s[:dim]


def _cca(a: torch.Tensor, b: torch.Tensor, dim: int, reg: float, cov_normalize: bool):
    scale = 1.0 / a.shape[0] if cov_normalize else 1.0
    sxx_isqrt = _inv_sqrt(scale * a.T @ a, reg, "image")
    syy_isqrt = _inv_sqrt(scale * b.T @ b, reg, "text")
    u, s, vh = torch.linalg.svd(sxx_isqrt @ (scale * a.T @ b) @ syy_isqrt, full_matrices=False)
    return sxx_isqrt @ u[:, :dim], syy_isqrt @ vh[:dim].T, s[:dim]


def default_teacher_dim(d_image: int, d_text: int, n_pairs: int, center: bool = True) -> int:
    """min(d_image, d_text, rank of the centred pairs): directions past it carry no signal."""
    return max(1, min(d_image, d_text, n_pairs - 1 if center else n_pairs))


def checked_teacher_dim(dim: int | None, d_image: int, d_text: int, n_pairs: int, center: bool = True) -> int:
    """The teacher dim a fit on ``n_pairs`` pairs will use (None = ``default_teacher_dim``), or an
    ``InputError`` if it cannot hold it; needs the shapes only, so a run checks it before it starts."""
    limit = min(d_image, d_text, n_pairs)
    dim = default_teacher_dim(d_image, d_text, n_pairs, center) if dim is None else dim
    if not 1 <= dim <= limit:
        raise InputError(
            f"teacher dim {dim} must be between 1 and min(d_image={d_image}, d_text={d_text}, n_pairs={n_pairs}) = {limit}"
        )
    return dim


def prepared_pairs(
    image_emb, text_emb, dim: int | None, normalize: bool = True, center: bool = True, image_mean=None, text_mean=None
) -> tuple[torch.Tensor, torch.Tensor, Preprocessing, Preprocessing, int]:
    """The pairs as every teacher sees them: checked, preprocessed in float64 (L2-normalised, then
    centred on their own mean or on a mean computed elsewhere, e.g. over paired + unpaired data),
    with the preprocessing and the checked teacher dim (None = ``default_teacher_dim``)."""
    images = as_embeddings(image_emb, "paired image embeddings").cpu()  # closed forms run on the CPU in float64
    texts = as_embeddings(text_emb, "paired text embeddings").cpu()
    check_pairs(images, texts)
    dim = checked_teacher_dim(dim, images.shape[1], texts.shape[1], images.shape[0], center)
    image_prep = _preprocessing(images, normalize, center, image_mean)
    text_prep = _preprocessing(texts, normalize, center, text_mean)
    with torch.no_grad():
        return image_prep(images.double()).double(), text_prep(texts.double()).double(), image_prep, text_prep, dim


def fit_teacher(
    kind: str,
    image_emb,
    text_emb,
    dim: int | None = None,
    *,
    normalize: bool = True,
    center: bool = True,
    image_mean=None,
    text_mean=None,
    reg: float = 0.1,
    cov_normalize: bool = True,
) -> Teacher:
    """Fit a closed-form ``procrustes`` or ``cca`` teacher on paired embeddings.

    ``image_mean``/``text_mean`` centre with a mean computed elsewhere (e.g. over paired + unpaired
    data); ``reg`` (paper App. A.1: 0.1) and ``cov_normalize`` apply to ``cca`` only. The
    ``contrastive`` teacher is trained: ``sotalign.two_stage.fit_contrastive_teacher``.
    """
    if kind == "contrastive":
        raise InputError(
            "the contrastive teacher is trained, not solved: use sotalign.two_stage.fit_contrastive_teacher"
        )
    check_choice(kind, CLOSED_FORMS, "closed-form teacher")
    a, b, image_prep, text_prep, dim = prepared_pairs(
        image_emb, text_emb, dim, normalize, center, image_mean, text_mean
    )
    if kind == "procrustes":
        wx, wy, corr = _procrustes(a, b, dim)
    else:
        wx, wy, corr = _cca(a, b, dim, reg, cov_normalize)
    return Teacher(kind, wx, wy, image_prep, text_prep, corr)


def _preprocessing(x: torch.Tensor, normalize: bool, center: bool, mean) -> Preprocessing:
    if mean is None:
        return Preprocessing.fit(x, normalize=normalize, center=center)
    mean = torch.as_tensor(mean).cpu()
    if mean.shape != (x.shape[1],):
        raise InputError(f"a precomputed mean must have shape ({x.shape[1]},), got {tuple(mean.shape)}")
    return Preprocessing(x.shape[1], normalize, mean)
