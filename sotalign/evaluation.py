"""Evaluation in the joint space: retrieval, zero-shot classification, mutual k-NN.

Retrieval and k-NN work on query chunks, so memory is O(chunk x n) rather than O(n^2).
Ranks count the candidates scored strictly above the correct one, which is exact and
needs no sort. Accuracies and recalls are in percent, as the paper reports them. Metric
keys contain no ``@`` (MLflow refuses it): ``t2i_recall_at_1``, ``mean_recall_at_1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sotalign.checks import as_embeddings, check_same_dim


@torch.no_grad()
def retrieval(
    image_emb,
    text_emb,
    text_to_image=None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@k.

    ``text_to_image[j]`` is the index of the image that caption ``j`` describes (several
    captions per image allowed); by default caption j belongs to image j. An image query
    is a hit at k when any of its captions is among the top k.
    """
    images = F.normalize(as_embeddings(image_emb, "image embeddings").float(), dim=1)
    texts = F.normalize(as_embeddings(text_emb, "text embeddings").float(), dim=1).to(images.device)
    check_same_dim(images, texts, "image embeddings", "text embeddings")
    n_img, n_txt = images.shape[0], texts.shape[0]
    if text_to_image is None:
        if n_img != n_txt:
            raise ValueError(f"{n_img} images and {n_txt} texts: pass text_to_image to say which caption is whose")
        t2i = torch.arange(n_txt, device=images.device)
    else:
        t2i = torch.as_tensor(text_to_image, device=images.device).long()
        if t2i.shape != (n_txt,) or (t2i.numel() and (t2i.min() < 0 or t2i.max() >= n_img)):
            raise ValueError(f"text_to_image must hold {n_txt} image indices in [0, {n_img})")
        if torch.bincount(t2i, minlength=n_img).min() == 0:
            raise ValueError("every image needs at least one caption in text_to_image")

    t2i_ranks = torch.empty(n_txt, dtype=torch.long, device=images.device)
    for start in range(0, n_txt, chunk_size):
        sims = texts[start : start + chunk_size] @ images.T
        correct = sims.gather(1, t2i[start : start + chunk_size, None])
        t2i_ranks[start : start + chunk_size] = (sims > correct).sum(1)

    i2t_ranks = torch.empty(n_img, dtype=torch.long, device=images.device)
    for start in range(0, n_img, chunk_size):
        sims = images[start : start + chunk_size] @ texts.T
        own = t2i[None, :] == torch.arange(start, start + sims.shape[0], device=images.device)[:, None]
        best = sims.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
        i2t_ranks[start : start + sims.shape[0]] = (sims > best).sum(1)

    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_recall_at_{k}"] = 100.0 * (i2t_ranks < k).double().mean().item()
        out[f"t2i_recall_at_{k}"] = 100.0 * (t2i_ranks < k).double().mean().item()
    if 1 in ks:
        out["mean_recall_at_1"] = 0.5 * (out["i2t_recall_at_1"] + out["t2i_recall_at_1"])
    return out


def class_embeddings(class_text_emb) -> torch.Tensor:
    """(C, d) or (C, T, d) prompt embeddings -> (C, d) normalised class vectors (templates averaged)."""
    emb = torch.as_tensor(class_text_emb).float()
    if emb.ndim == 2:
        return F.normalize(emb, dim=-1)
    if emb.ndim != 3:
        raise ValueError(f"class text embeddings must be (classes, dim) or (classes, templates, dim), got {tuple(emb.shape)}")
    return F.normalize(F.normalize(emb, dim=-1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot(image_emb, labels, class_text_emb, *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of nearest-class-caption classification (k larger than the class count is skipped)."""
    images = F.normalize(as_embeddings(image_emb, "image embeddings").float(), dim=1)
    classes = class_embeddings(class_text_emb).to(images.device)
    check_same_dim(images, classes, "image embeddings", "class text embeddings")
    labels = torch.as_tensor(labels, device=images.device).long()
    if labels.shape != (images.shape[0],):
        raise ValueError(f"need one label per image: {images.shape[0]} images, labels of shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= classes.shape[0]:
        raise ValueError(f"labels must lie in [0, {classes.shape[0]}) (one class text per class)")
    scores = images @ classes.T
    correct = scores.gather(1, labels[:, None])
    ranks = (scores > correct).sum(1)
    return {f"top{k}": 100.0 * (ranks < k).double().mean().item() for k in ks if k <= classes.shape[0]}


@torch.no_grad()
def mutual_knn(a, b, k: int = 10, *, chunk_size: int = 1024) -> float:
    """Mean fraction of shared k nearest neighbours (cosine, self excluded) of row i in ``a`` and in ``b``.

    The mutual k-NN alignment score of the Platonic Representation Hypothesis (paper Table 8).
    """
    a = F.normalize(as_embeddings(a, "a").float(), dim=1)
    b = F.normalize(as_embeddings(b, "b").float(), dim=1).to(a.device)
    n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError(f"a and b must describe the same {n} samples, got {b.shape[0]} rows in b")
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
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
