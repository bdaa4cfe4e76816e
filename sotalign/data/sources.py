"""Sources: the embedded tables an experiment reads its pairs, unpaired data and held-out data from.

A source is ``DATASET:SPLIT`` of the store, one modality of it (``image`` or ``text``) embedded
with one encoder. Real semi-supervised data comes as separate sources: a few real pairs
(``pairs``), images without captions (``unpaired_images``), captions without images
(``unpaired_texts``), and pairs held out for validation and test. Each is resolved once here into
its embeddings, its store ids and, where the store knows it, each row's partner label, so that
the harness (``sotalign.experiments.experiment``) only draws budgets and splits.

Partner labels say which unpaired image and text belong together when the pairing is known
(the teacher's plan diagnostic is logged only then): a table with a ``concept`` column labels
rows by concept; otherwise an image is labelled by its store id and a caption by the id of its
image (``image_id``), so an image-only collection and a text corpus share no label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.extract import encoder_slug, is_complete, read_table, table_dir

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class SourceRef:
    """``DATASET:SPLIT`` of the store."""

    dataset: str
    split: str

    @classmethod
    def parse(cls, text: str, field: str) -> SourceRef:
        """``field`` names the setting in errors (``data.unpaired_images``)."""
        if not isinstance(text, str) or text.count(":") != 1 or not all(text.split(":")):
            raise InputError(f"{field} must read DATASET:SPLIT (e.g. my-images:all), got {text!r}")
        dataset, split = text.split(":")
        return cls(dataset, split)

    def __str__(self) -> str:
        return f"{self.dataset}:{self.split}"


def parse_refs(value: str | list[str] | None, field: str) -> list[SourceRef]:
    """One ``DATASET:SPLIT`` or a list of them (several collections); None = none."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not values:
        raise InputError(f"{field} must be DATASET:SPLIT or a non-empty list of them, got {value!r}")
    refs = [SourceRef.parse(v, field) for v in values]
    if len(set(refs)) != len(refs):
        raise InputError(f"{field} lists a source twice: {', '.join(map(str, refs))}")
    return refs


@dataclass
class Source:
    """The rows of one or more tables of one modality, concatenated in the order they were listed."""

    embeddings: torch.Tensor  # (n, dim) float32
    ids: np.ndarray  # (n,) store ids ("DATASET/ID", captions "DATASET/ID#k")
    labels: np.ndarray | None  # (n,) partner labels (concept, or image id), None where unknown

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Source:
        return Source(
            self.embeddings[torch.from_numpy(rows)], self.ids[rows], None if self.labels is None else self.labels[rows]
        )


def check_source(store: str, ref: SourceRef, modality: str, encoder_id: str, field: str) -> None:
    """Raise an ``InputError`` saying why ``ref``'s ``modality`` table of ``encoder_id`` is not in the store:
    no such dataset or split, the other modality only (a text corpus given as images), or another encoder."""
    if is_complete(table_dir(store, ref.dataset, ref.split, modality, encoder_id)):
        return
    split_dir = fs.join(store, ref.dataset, ref.split)
    other = MODALITIES[1 - MODALITIES.index(modality)]
    if not fs.is_dir(split_dir):
        why = f"the store {store} holds no {ref} (embed it first with `sotalign embed --out {store}`)"
    elif not fs.is_dir(fs.join(split_dir, modality)):
        held = "texts" if other == "text" else "images"
        why = f"{ref} holds {held} only, no {modality}s (a {other}-only source)"
    elif not fs.is_dir(fs.join(split_dir, modality, encoder_slug(encoder_id))):
        why = f"{ref}'s {modality}s were embedded with another encoder, not {encoder_id}"
    else:
        why = f"{ref}'s {modality} table of {encoder_id} is incomplete (its `sotalign embed` did not finish)"
    raise InputError(f"{field}: {why}")


def read_source(store: str, refs: list[SourceRef], modality: str, encoder_id: str, field: str) -> Source:
    """The ``modality`` rows of every table in ``refs``, checked (``check_source``) and concatenated."""
    parts = []
    for ref in refs:
        check_source(store, ref, modality, encoder_id, field)
        table = read_table(table_dir(store, ref.dataset, ref.split, modality, encoder_id))
        parts.append((table, _labels(table, modality)))
    known = all(labels is not None for _, labels in parts)
    return Source(
        torch.cat([table.embeddings for table, _ in parts]),
        np.concatenate([np.asarray(table.ids) for table, _ in parts]),
        np.concatenate([labels for _, labels in parts]) if known else None,
    )


def _labels(table, modality: str) -> np.ndarray | None:
    """Partner labels of a table's rows: concepts, else image ids (an image's own, a caption's image's)."""
    if "concept" in table.columns:
        return table.columns["concept"].astype(str)
    if modality == "image":
        return np.asarray(table.ids, dtype=str)
    owners = table.columns.get("image_id")
    return None if owners is None else owners.astype(str)


def subsample(source: Source, n: int | None, seed: int, salt: int) -> Source:
    """``n`` rows (at most its length) drawn without replacement with ``[seed, salt]``, kept in table
    order; all when None."""
    if n is None:
        return source
    return source.take(np.sort(np.random.default_rng([seed, salt]).choice(len(source), n, replace=False)))
