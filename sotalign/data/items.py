"""A stored row's image and caption, re-read from its dataset by the ids the store keeps.

The store holds embeddings, not pictures: a gallery or a search answer that shows images
re-opens the dataset the table came from. The bundled benchmarks re-render theirs, the Iconify
sets re-read the packed sets kept under ``STORE/_npm`` (``registry.npm_cache``), and a user's data (any format of
``sotalign.data.formats``) is reloaded from the location, format and columns its tables recorded
when embedded (``source`` in their metadata); unpaired images are shown without captions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import ImageDataset, ImageTextDataset, TextDataset
from sotalign.data.extract import MANIFEST
from sotalign.data.registry import BUNDLED, is_iconify, load_dataset, npm_cache

CHANGED = "its files differ from what the store embedded (a file gone or changed since `sotalign embed`)"


@dataclass
class DatasetItems:
    """Images and captions of one dataset by store id (``DATASET/IMAGE_ID``, ``DATASET/IMAGE_ID#k``)."""

    dataset: ImageTextDataset
    image_index: dict[str, int]  # store id -> the dataset's image index
    caption_index: dict[str, int]  # store id -> the dataset's caption index

    @classmethod
    def of(cls, dataset: ImageTextDataset) -> DatasetItems:
        images = {f"{dataset.name}/{image_id}": i for i, image_id in enumerate(dataset.image_ids)}
        captions, seen = {}, {}
        for row, owner in enumerate(dataset.caption_image):  # the k-th caption of its image, as the store numbers them
            seen[owner] = seen.get(owner, -1) + 1
            captions[f"{dataset.name}/{dataset.image_ids[owner]}#{seen[owner]}"] = row
        return cls(dataset, images, captions)

    def image(self, store_id: str) -> Image.Image:
        if store_id not in self.image_index:
            raise InputError(f"no image {store_id!r} in dataset {self.dataset.name!r} as read now: {CHANGED}")
        return self.dataset.load_image(self.image_index[store_id]).convert("RGB")

    def describe(self, image_store_id: str) -> str:
        """An image in words: its first caption, else its concept's name, else nothing."""
        first = self.caption_index.get(f"{image_store_id}#0")
        if first is not None:
            return self.dataset.captions[first]
        if self.dataset.image_concept is not None and image_store_id in self.image_index:
            return str(self.dataset.image_concept[self.image_index[image_store_id]])
        return ""

    def caption(self, store_id: str) -> str:
        if store_id not in self.caption_index:
            raise InputError(f"no caption {store_id!r} in dataset {self.dataset.name!r} as read now: {CHANGED}")
        return self.dataset.captions[self.caption_index[store_id]]


def open_items(dataset: str, store: str | os.PathLike) -> DatasetItems | str:
    """The items of ``dataset`` as embedded in ``store``, or why they cannot be shown (synthetic data
    has no images; a table embedded before its source was recorded)."""
    if dataset == "synthetic":
        return "synthetic data has no images"
    if dataset in BUNDLED:
        loaded = load_dataset(dataset)
    elif is_iconify(dataset):
        loaded = load_dataset(dataset, npm_cache=npm_cache(store))
    elif not fs.is_dir(fs.join(store, dataset)):
        return f"no folder {fs.join(store, dataset)} on this machine (the store is not shared with it)"
    else:
        source = _recorded_source(fs.join(store, dataset))
        if source is None:
            return f"the store's {dataset} tables do not record their source file (embedded before it was kept)"
        loaded = load_dataset(source.pop("name"), **source)
    if isinstance(loaded, TextDataset):
        return f"{dataset} is text-only: it has no images to show"
    if isinstance(loaded, ImageDataset):  # unpaired images: shown without captions
        loaded = ImageTextDataset(
            loaded.name, loaded.image_ids, [], np.zeros(0, dtype=int), loaded.splits, loaded.load_image
        )
    if not isinstance(loaded, ImageTextDataset):
        return f"{dataset} is a classification dataset, not image-caption pairs"
    return DatasetItems.of(loaded)


def _recorded_source(folder: str) -> dict | None:
    """The ``source`` of the first complete table under a dataset's store folder (SPLIT/MODALITY/ENCODER/)."""
    for manifest in (f for f in fs.list_files(folder, recursive=True) if fs.name(f) == MANIFEST):
        source = json.loads(fs.read_text(manifest)).get("source")
        if source:
            return dict(source)
    return None
