"""Datasets by name: the bundled offline benchmarks (generic tables and folders come later)."""

from __future__ import annotations

from sotalign.data.datasets import ClassificationDataset, ImageTextDataset

BUNDLED = ("openmoji", "digits")


def load_dataset(name: str) -> ImageTextDataset | ClassificationDataset:
    if name == "openmoji":
        from sotalign.data.openmoji import load_openmoji

        return load_openmoji()
    if name == "digits":
        from sotalign.data.digits import load_digits

        return load_digits()
    raise ValueError(f"unknown dataset {name!r}; bundled: {', '.join(BUNDLED)}")
