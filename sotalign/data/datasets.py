"""Dataset descriptions that the embedding extractor consumes.

An ``ImageTextDataset`` has images, captions (several per image allowed, ``caption_image``
maps each caption to its image) and named splits of image indices. With ``image_concept``,
several images share their captions: a caption describes the concept of its image, and every
image of that concept (another drawing style, say) is a correct match for it. A
``ClassificationDataset`` has labelled images, class names and prompt templates (its
"captions" are the class x template prompts). An ``ImageDataset`` has images only (unpaired
images) and a ``TextDataset`` texts only (unpaired texts). Each kind names the ``modalities`` it
has, so that ``sotalign embed`` runs only the encoders a dataset can feed. Images are loaded
lazily by index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sotalign.checks import InputError


@dataclass
class ImageTextDataset:
    name: str
    image_ids: list[str]
    captions: list[str]
    caption_image: np.ndarray  # (n_captions,) index of each caption's image
    splits: dict[str, np.ndarray]  # split -> sorted image indices
    load_image: Callable[[int], Image.Image]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row, reason) left out by skip_bad
    image_concept: np.ndarray | None = None  # (n_images,) concept names; None = each image its own concept
    image_columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-image values stored beside the embeddings
    source: dict | None = None  # load_dataset's arguments for a user's table, kept in the store: what re-reads it
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (image, earlier image with the same bytes)
    modalities = ("image", "text")

    def split_indices(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(image indices, caption indices) of ``split``, in a fixed order."""
        if split not in self.splits:
            raise InputError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        images = self.splits[split]
        captions = np.flatnonzero(np.isin(self.caption_image, images))
        return images, captions


@dataclass
class ClassificationDataset:
    name: str
    image_ids: list[str]
    labels: np.ndarray
    class_names: list[str]
    templates: list[str]  # each with one "{}" for the class name
    splits: dict[str, np.ndarray]
    load_image: Callable[[int], Image.Image]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    modalities = ("image", "text")  # texts: the class prompts

    def prompts(self) -> list[str]:
        """Class-major prompts: row c * len(templates) + t is template t of class c."""
        return [t.format(c) for c in self.class_names for t in self.templates]

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise InputError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.splits[split]


@dataclass
class ImageDataset:
    """Images without captions (unpaired images): an image table only."""

    name: str
    image_ids: list[str]
    splits: dict[str, np.ndarray]  # split -> sorted image indices
    load_image: Callable[[int], Image.Image]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: dict | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    modalities = ("image",)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise InputError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.splits[split]


@dataclass
class TextDataset:
    """Texts without images (unpaired texts): a text table only. ``text_ids[i]`` names text i
    in its file (a line or row number, a sample key), stable across reads."""

    name: str
    text_ids: list[str]
    texts: list[str]
    splits: dict[str, np.ndarray]  # split -> sorted text indices
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: dict | None = None
    modalities = ("text",)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise InputError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.splits[split]


AnyDataset = ImageTextDataset | ClassificationDataset | ImageDataset | TextDataset


def fixed_split(ids: list[str], n_test: int, salt: str) -> dict[str, np.ndarray]:
    """A split that depends only on the ids (a stable hash), not on order or a seed."""
    import hashlib

    keys = [hashlib.sha1(f"{salt}/{i}".encode()).hexdigest() for i in ids]
    order = np.argsort(keys, kind="stable")
    return {"test": np.sort(order[:n_test]), "pool": np.sort(order[n_test:])}
