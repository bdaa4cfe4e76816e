"""Evaluation in the joint space: retrieval, zero-shot classification, mutual k-NN; and how
much of the teacher's OT plan lands on true partners where the unpaired data's pairing is known.

Retrieval and k-NN work on query chunks, so memory is O(chunk x n) rather than O(n^2).
A query's hit at k is its expected value when ties are broken uniformly at random: wrong
candidates scored above its best-scored correct one push it down, and wrong candidates tied with
that score push it down in proportion to their share of the tie, so a collapsed model (constant
embeddings) scores chance, never 100 (``hit_probability``). Exact, and needs no sort. Accuracies and recalls are in percent, as the paper reports them. Metric
keys contain no ``@`` (MLflow refuses it): ``t2i_recall_at_1``, ``mean_recall_at_1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sotalign.checks import InputError, as_embeddings, check_same_dim
from sotalign.ot import exp_
from sotalign.ot_blockwise import rows_per_block, sinkhorn_potentials


@torch.no_grad()
def retrieval(
    image_emb,
    text_emb,
    text_to_image=None,
    *,
    image_groups=None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@k.

    ``text_to_image[j]`` is the index of the image that caption ``j`` describes (several
    captions per image allowed); by default caption j belongs to image j. ``image_groups[i]``
    (any integers) puts images in groups that share their captions, e.g. one concept drawn in
    several styles: caption j then describes every image of the group of ``text_to_image[j]``.
    A query is a hit at k when any correct item is among the top k: for an image, any caption
    of its group (of itself without groups); for a caption, any image of its group. Ties with its
    best-scored correct one count as broken at random (``hit_probability``).
    """
    images = F.normalize(as_embeddings(image_emb, "image embeddings").float(), dim=1)
    texts = F.normalize(as_embeddings(text_emb, "text embeddings").float(), dim=1).to(images.device)
    check_same_dim(images, texts, "image embeddings", "text embeddings")
    n_img, n_txt = images.shape[0], texts.shape[0]
    if text_to_image is None:
        if n_img != n_txt:
            raise InputError(f"{n_img} images and {n_txt} texts: pass text_to_image to say which caption is whose")
        t2i = torch.arange(n_txt, device=images.device)
    else:
        t2i = _as_index(text_to_image, images.device).long()
        if t2i.shape != (n_txt,) or (t2i.numel() and (t2i.min() < 0 or t2i.max() >= n_img)):
            raise InputError(f"text_to_image must hold {n_txt} image indices in [0, {n_img})")
    if image_groups is None:
        image_group = torch.arange(n_img, device=images.device)
    else:
        image_group = _as_index(image_groups, images.device)
        if image_group.shape != (n_img,) or image_group.is_floating_point():
            raise InputError(
                f"image_groups must hold one integer group per image ({n_img}), got shape {tuple(image_group.shape)}"
            )
        image_group = torch.unique(image_group, return_inverse=True)[1]
    text_group = image_group[t2i]
    if torch.bincount(text_group, minlength=int(image_group.max()) + 1)[image_group].min() == 0:
        raise InputError(
            "every image needs at least one caption in text_to_image"
            if image_groups is None
            else "every image group needs at least one caption in text_to_image"
        )

    def standings(
        queries: torch.Tensor, candidates: torch.Tensor, query_group: torch.Tensor, candidate_group: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per query: wrong candidates above its best correct score, wrong ones tied with it, correct ones at it."""
        above, tied, level = (torch.empty(len(queries), dtype=torch.long, device=images.device) for _ in range(3))
        for start in range(0, len(queries), chunk_size):
            sims = queries[start : start + chunk_size] @ candidates.T
            correct = candidate_group[None, :] == query_group[start : start + chunk_size, None]
            best = sims.masked_fill(~correct, float("-inf")).amax(1, keepdim=True)
            rows = slice(start, start + len(sims))
            above[rows] = ((sims > best) & ~correct).sum(1)
            tied[rows] = ((sims == best) & ~correct).sum(1)
            level[rows] = ((sims == best) & correct).sum(1)
        return above, tied, level

    t2i = standings(texts, images, text_group, image_group)
    i2t = standings(images, texts, image_group, text_group)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_recall_at_{k}"] = 100.0 * hit_probability(*i2t, k).mean().item()
        out[f"t2i_recall_at_{k}"] = 100.0 * hit_probability(*t2i, k).mean().item()
    if 1 in ks:
        out["mean_recall_at_1"] = 0.5 * (out["i2t_recall_at_1"] + out["t2i_recall_at_1"])
    return out


def _as_index(values, device) -> torch.Tensor:
    """Indices or labels as a tensor on ``device``; a read-only array (Ray's object store hands
    them out so) is copied first, since a tensor cannot share read-only memory."""
    if isinstance(values, np.ndarray) and not values.flags.writeable:
        values = values.copy()
    return torch.as_tensor(values, device=device)


def hit_probability(above: torch.Tensor, tied: torch.Tensor, level: torch.Tensor, k: int) -> torch.Tensor:
    """P(a correct candidate is in the top ``k``) for each query, ties broken uniformly at random.

    ``above``: wrong candidates scored above the query's best correct score; ``tied``: wrong ones
    scored equal to it; ``level``: correct ones scored equal to it (>= 1). The tied block fills the
    ``k - above`` places left; the query misses when they all go to wrong candidates, which happens
    with probability prod_{i < k - above} (tied - i) / (tied + level - i).
    """
    left = k - above
    miss = torch.ones(above.shape, dtype=torch.float64, device=above.device)
    for i in range(k):
        share = (tied - i).clamp(min=0).double() / (tied + level - i).clamp(min=1).double()
        miss = torch.where(i < left, miss * share, miss)
    return torch.where(left > 0, 1.0 - miss, torch.zeros_like(miss))


def class_embeddings(class_text_emb) -> torch.Tensor:
    """(C, d) or (C, T, d) prompt embeddings -> (C, d) normalised class vectors (templates averaged)."""
    emb = torch.as_tensor(class_text_emb).float()
    if emb.ndim == 2:
        return F.normalize(emb, dim=-1)
    if emb.ndim != 3:
        raise InputError(
            f"class text embeddings must be (classes, dim) or (classes, templates, dim), got {tuple(emb.shape)}"
        )
    return F.normalize(F.normalize(emb, dim=-1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot(image_emb, labels, class_text_emb, *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of nearest-class-caption classification (k larger than the class count is skipped)."""
    images = F.normalize(as_embeddings(image_emb, "image embeddings").float(), dim=1)
    classes = class_embeddings(class_text_emb).to(images.device)
    check_same_dim(images, classes, "image embeddings", "class text embeddings")
    labels = _as_index(labels, images.device).long()
    if labels.shape != (images.shape[0],):
        raise InputError(f"need one label per image: {images.shape[0]} images, labels of shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= classes.shape[0]:
        raise InputError(f"labels must lie in [0, {classes.shape[0]}) (one class text per class)")
    scores = images @ classes.T
    correct = scores.gather(1, labels[:, None])
    above, tied = (scores > correct).sum(1), (scores == correct).sum(1) - 1  # the own class ties itself
    level = torch.ones_like(above)
    return {
        f"top{k}": 100.0 * hit_probability(above, tied, level, k).mean().item() for k in ks if k <= classes.shape[0]
    }


@torch.no_grad()
def mutual_knn(a, b, k: int = 10, *, chunk_size: int = 1024) -> float:
    """Mean fraction of shared k nearest neighbours (cosine, self excluded) of row i in ``a`` and in ``b``.

    The mutual k-NN alignment score of the Platonic Representation Hypothesis (paper Table 8).
    """
    a = F.normalize(as_embeddings(a, "a").float(), dim=1)
    b = F.normalize(as_embeddings(b, "b").float(), dim=1).to(a.device)
    n = a.shape[0]
    if b.shape[0] != n:
        raise InputError(f"a and b must describe the same {n} samples, got {b.shape[0]} rows in b")
    if not 1 <= k < n:
        raise InputError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
    shared = 0.0
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=a.device)
        knn = []
        for x in (a, b):
            sims = x[rows] @ x.T
            sims[torch.arange(len(rows)), rows] = float("-inf")
            knn.append(sims.topk(k, dim=1).indices)
        in_a = torch.zeros(len(rows), n, dtype=torch.bool, device=a.device).scatter_(1, knn[0], True)
        shared += in_a.gather(1, knn[1]).sum().item()
    return shared / (n * k)


@torch.no_grad()
def plan_accuracy(
    image_emb,
    text_emb,
    image_labels,
    text_labels,
    *,
    epsilon: float = 0.01,  # AlignConfig.eps_teacher's default (paper App. A.1)
    n_iter: int = 100,  # paper App. A.1, as the KLOT term solves it
) -> dict[str, float]:
    """Where the entropic OT plan between a batch of images and texts puts its mass, in percent.

    ``image_emb`` / ``text_emb`` are the batch as the KLOT term sees it: the teacher's projections
    (normalised here, affinity = cosine). Image i and text j are true partners when
    ``image_labels[i] == text_labels[j]`` (a concept, say: several partners per row allowed).
    Returns ``plan_mass_on_partners`` (the plan's mass on partner cells), ``plan_argmax_on_partners``
    (rows, among those with a partner in the batch, whose largest plan entry is a partner) and
    ``chance_mass_on_partners`` (the mass a uniform plan would put there, the level to beat).
    Solved from the embeddings (``sotalign.ot_blockwise``): one n x m kernel while it solves, row blocks after.
    """
    images = F.normalize(as_embeddings(image_emb, "image embeddings").float(), dim=1)
    texts = F.normalize(as_embeddings(text_emb, "text embeddings").float(), dim=1).to(images.device)
    check_same_dim(images, texts, "image embeddings", "text embeddings")
    image_labels, text_labels = np.asarray(image_labels), np.asarray(text_labels)
    if image_labels.shape != (len(images),) or text_labels.shape != (len(texts),):
        raise InputError(
            f"need one label per image and per text: {len(images)} images with labels of shape "
            f"{image_labels.shape}, {len(texts)} texts with labels of shape {text_labels.shape}"
        )
    if not np.isin(image_labels, text_labels).any():
        raise InputError("no image of the batch has a partner text (no image label equals a text label)")
    ids = torch.as_tensor(
        np.unique(np.concatenate([image_labels, text_labels]), return_inverse=True)[1].reshape(-1), device=images.device
    )
    image_ids, text_ids = ids[: len(images)], ids[len(images) :]
    u, v, _ = sinkhorn_potentials(images, texts, epsilon, n_iter)  # one n x m kernel while it solves
    mass, total, partners, hits, with_partner = 0.0, 0.0, 0, 0, 0
    for start in range(0, len(images), rows := rows_per_block(len(texts))):  # then row blocks only
        block = slice(start, start + rows)
        partner = image_ids[block, None] == text_ids[None, :]
        plan = (images[block] @ texts.T).div_(epsilon).add_(u[block, None]).add_(v[None, :])
        row_has_partner = partner.any(1)
        hits += int(partner.gather(1, plan.argmax(1, keepdim=True)).squeeze(1)[row_has_partner].sum())
        with_partner += int(row_has_partner.sum())
        partners += int(partner.sum())
        exp_(plan)
        total += float(plan.sum())
        mass += float(plan.masked_fill_(~partner, 0.0).sum())
    return {
        "plan_mass_on_partners": 100.0 * mass / total,
        "plan_argmax_on_partners": 100.0 * hits / with_partner,
        "chance_mass_on_partners": 100.0 * partners / (len(images) * len(texts)),
    }
