"""Aligned views of stored tables for training and evaluation.

``retrieval_view`` joins an image table and a caption table of the same split: one row per
image, its first caption as the paired text, and every caption with the index of its image
(for multi-caption retrieval). Tables with a ``concept`` column (the ``iconify-*`` datasets)
share captions between the images of a concept: an image's paired text is its concept's first
caption and ``image_group`` says which images are one concept (for retrieval's hits), the
concepts' names in ``group_names`` (what matches a concept across datasets).
``pairs_view`` holds plain pairs (caption i of image i); ``classification_view`` pairs labelled
images with the class x template prompt embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sotalign.checks import InputError
from sotalign.data.store import EmbeddingTable


@dataclass
class RetrievalView:
    images: torch.Tensor  # (n_images, d_image)
    first_captions: torch.Tensor  # (n_images, d_text): caption #0 of each image
    captions: torch.Tensor  # (n_captions, d_text)
    caption_image: np.ndarray  # (n_captions,) row in ``images``
    image_group: np.ndarray | None = (
        None  # (n_images,) concept index (captions describe concepts); None = one image each
    )
    group_names: np.ndarray | None = None  # (n_groups,) each group's concept name, with image_group
    image_ids: np.ndarray | None = None  # (n_images,) store ids ("DATASET/ID"): what re-reads an image; None = unknown
    caption_ids: np.ndarray | None = None  # (n_captions,) store ids ("DATASET/ID#k"), with image_ids


@dataclass
class ClassificationView:
    images: torch.Tensor
    labels: np.ndarray
    class_prompts: torch.Tensor  # (n_classes, n_templates, d_text)


def retrieval_view(images: EmbeddingTable, captions: EmbeddingTable) -> RetrievalView:
    position = {image_id: i for i, image_id in enumerate(images.ids)}
    owners = captions.columns.get("image_id")
    if owners is None:
        raise InputError("the caption table has no image_id column (is it a class-prompt table?)")
    missing = [o for o in owners if o not in position]
    if missing:
        raise InputError(f"{len(missing)} captions belong to images not in the image table (first: {missing[:3]})")
    caption_image = np.asarray([position[o] for o in owners])
    concepts = images.columns.get("concept")
    names = group = None
    if concepts is not None:
        names, group = np.unique(concepts.astype(str), return_inverse=True)
        group = group.reshape(-1)
    key = np.arange(len(images.ids)) if group is None else group  # whose first caption an image gets
    first = first_rows(key[caption_image], int(key.max()) + 1)
    if (first[key] < 0).any():
        raise InputError(f"{int((first[key] < 0).sum())} images have no caption")
    return RetrievalView(
        images.embeddings,
        captions.embeddings[first[key]],
        captions.embeddings,
        caption_image,
        group,
        names,
        np.asarray(images.ids),
        np.asarray(captions.ids),
    )


def first_rows(owners: np.ndarray, n: int) -> np.ndarray:
    """For each of ``n`` owners (images, concepts), the lowest row of ``owners`` that is theirs; -1 for none."""
    first = np.full(n, -1)
    for row in range(len(owners) - 1, -1, -1):
        first[owners[row]] = row
    return first


def pairs_view(images: torch.Tensor, texts: torch.Tensor) -> RetrievalView:
    """Held-out pairs as a view: text i is the one caption of image i."""
    return RetrievalView(images, texts, texts, np.arange(len(texts)))


def classification_view(images: EmbeddingTable, prompts: EmbeddingTable) -> ClassificationView:
    labels, templates = prompts.columns["label"], prompts.columns["template"]
    n_classes, n_templates = int(labels.max()) + 1, int(templates.max()) + 1
    grid = torch.empty(n_classes, n_templates, prompts.embeddings.shape[1])
    grid[labels, templates] = prompts.embeddings
    return ClassificationView(images.embeddings, np.asarray(images.columns["label"]), grid)
