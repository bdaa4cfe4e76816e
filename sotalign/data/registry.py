"""Datasets by name: a bundled benchmark, an image-caption table file, or a labelled image folder."""

from __future__ import annotations

from pathlib import Path

from sotalign.data.datasets import ClassificationDataset, ImageTextDataset

BUNDLED = ("openmoji", "digits")


def load_dataset(name: str, **options) -> ImageTextDataset | ClassificationDataset:
    """``options`` go to the generic loaders (``image_column``, ``caption_column``, ``skip_bad``)."""
    if name == "openmoji":
        from sotalign.data.openmoji import load_openmoji

        return load_openmoji()
    if name == "digits":
        from sotalign.data.digits import load_digits

        return load_digits()
    path = Path(name)
    if path.is_file():
        from sotalign.data.generic import load_image_text_table

        return load_image_text_table(path, **options)
    if path.is_dir():
        from sotalign.data.generic import load_image_folder

        return load_image_folder(path, skip_bad=options.get("skip_bad", False))
    raise ValueError(f"unknown dataset {name!r}: neither a bundled one ({', '.join(BUNDLED)}) nor an existing table file or image folder")
