"""Paired losses (SigLIP, InfoNCE) and the divergences of paper Table 1 (KLOT, generalised
InfoNCE, CKA) that pull the student's unpaired geometry towards the teacher's.

Every loss returns a dict of named terms: the loss itself under its name, plus detached
diagnostics under a ``/``-prefixed key (e.g. ``sinkhorn/teacher_marginal_err``), so that
trainers can log everything by name. Divergences take L2-normalised embeddings
(student images, student texts, teacher images, teacher texts), which lets CKA use its
linear-time factorised form instead of n x m affinity matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sotalign.checks import check_choice
from sotalign.ot import mass_scale
from sotalign.ot_blockwise import TeacherPlanCache, klot_blockwise

Terms = dict[str, torch.Tensor]


def siglip_loss(
    affinity: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    positives: int | None = None,
    positive_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """-(1/n) sum_ij log sigmoid(z_ij (scale * K_ij + bias)), z = +1 for positives, -1 elsewhere.

    The n pairs lead the matrix (``positives``, default: one per row). Their positives are the
    first n diagonal entries, or with ``positive_mask`` ((n, n), the diagonal included) every pair
    entry it marks: pairs that share their caption are positives of each other. Every other entry,
    including extra rows and columns, is a negative (semi-supervised SAIL puts unpaired images and
    texts there). The sum is divided by n either way.
    """
    n = affinity.shape[0] if positives is None else positives
    logits = scale * affinity + bias
    signs = -torch.ones_like(logits)
    if positive_mask is None:
        signs[:n, :n].diagonal().fill_(1.0)
    else:
        signs[:n, :n] = torch.where(positive_mask, 1.0, -1.0)
    return -F.logsigmoid(signs * logits).sum() / n


class SigLIPLoss(nn.Module):
    """SigLIP with a learned logit scale (stored as its log) and bias."""

    def __init__(
        self,
        init_scale: float = 20.0,  # paper.md 3.2, following SAIL
        init_bias: float = -10.0,  # paper.md 3.2, following SAIL
    ):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(
        self, affinity: torch.Tensor, positives: int | None = None, positive_mask: torch.Tensor | None = None
    ) -> Terms:
        return {
            "siglip": siglip_loss(affinity, self.log_scale.exp(), self.bias, positives, positive_mask),
            "siglip/scale": self.log_scale.detach().exp(),
            "siglip/bias": self.bias.detach(),
        }


def info_nce_loss(
    affinity: torch.Tensor, temperature: float = 0.07, positive_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) on a square affinity matrix with positives on the diagonal, or with
    ``positive_mask`` on every entry it marks (pairs sharing a caption): each row's target is then
    spread evenly over its positives (the multi-positive cross-entropy of SupCon's "out" form)."""
    logits = affinity / temperature
    if positive_mask is None:
        labels = torch.arange(affinity.shape[0], device=affinity.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    targets = positive_mask.to(logits.dtype)
    rows, columns = targets / targets.sum(1, keepdim=True), targets.T / targets.T.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, columns))


def klot_divergence(
    student_images: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_images: torch.Tensor,
    teacher_texts: torch.Tensor,
    *,
    eps_student: float,
    eps_teacher: float,
    n_iter: int,
    mass: str,
    teacher_cache: TeacherPlanCache | None = None,
) -> Terms:
    """KLOT(K || K*) of the cosine affinities (paper eq. 12), explicit gradient (Thm 5.1).

    Computed from the embeddings block by block (``sotalign.ot_blockwise``): equal to dense
    KLOT on K = X Y^T, without its n x m plans, so large unpaired batches fit. A
    ``teacher_cache`` solves the teacher's plan once while the unpaired batch stays the same.
    """
    value, diagnostics = klot_blockwise(
        student_images,
        student_texts,
        teacher_images,
        teacher_texts,
        eps_student,
        eps_teacher,
        n_iter,
        mass,
        teacher_cache=teacher_cache,
    )
    return {"klot": value, **diagnostics}


def ginfonce_divergence(
    student_images: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_images: torch.Tensor,
    teacher_texts: torch.Tensor,
    *,
    eps_student: float,
    eps_teacher: float,
    mass: str,
    **_: object,
) -> Terms:
    """Generalised InfoNCE (paper eq. 10): ``KL(Softmax_eps*(K*) || Softmax_eps(K))`` per row.

    Summed over rows (total mass n, ``mass="rows"``) or averaged (mass 1, ``"unit"``), to
    match KLOT's plan-mass convention.
    """
    log_q = F.log_softmax(student_images @ student_texts.T / eps_student, dim=1)
    log_p = F.log_softmax((teacher_images @ teacher_texts.T).to(log_q.dtype) / eps_teacher, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum()
    return {"ginfonce": kl * mass_scale(mass, log_q.shape[0]) / log_q.shape[0]}


def _centered_gram_inner(a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """<H A1 B1^T H, H A2 B2^T H>_F in O((n + m) d^2), never forming the n x m matrices."""
    a1, a2 = a1 - a1.mean(0), a2 - a2.mean(0)
    b1, b2 = b1 - b1.mean(0), b2 - b2.mean(0)
    return ((a1.T @ a2) * (b1.T @ b2)).sum()


def cka_divergence(
    student_images: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_images: torch.Tensor,
    teacher_texts: torch.Tensor,
    **_: object,
) -> Terms:
    """1 - CKA(K, K*): one minus the cosine between the doubly-centred affinity matrices.

    With K = F G^T the centred Frobenius products factorise (paper eq. 9, "linear-time via
    kernel factorisation"). CKA asks K to match K* up to scale, which the paper finds
    overly restrictive for a noisy teacher.
    """
    t_img, t_txt = teacher_images.to(student_images.dtype), teacher_texts.to(student_images.dtype)
    cross = _centered_gram_inner(student_images, student_texts, t_img, t_txt)
    own = _centered_gram_inner(student_images, student_texts, student_images, student_texts)
    target = _centered_gram_inner(t_img, t_txt, t_img, t_txt)
    return {"cka": 1.0 - cross / (own.clamp_min(1e-12) * target.clamp_min(1e-12)).sqrt()}


Divergence = Callable[..., Terms]
DIVERGENCES: dict[str, Divergence | None] = {
    "klot": klot_divergence,
    "ginfonce": ginfonce_divergence,
    "cka": cka_divergence,
    "none": None,
}


def get_divergence(name: str) -> Divergence | None:
    """The divergence function called ``name`` (``None`` for ``"none"``)."""
    check_choice(name, DIVERGENCES, "divergence")
    return DIVERGENCES[name]
