"""Hugging Face ``datasets``: a folder written by ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict``
whose splits become splits), or the Parquet files of such a dataset (one file, or a folder of them;
files named ``SPLIT-00000-of-00003.parquet``, as the Hub exports them, give their splits, others
split ``all``). Read with the ``datasets`` library, offline (``HF_DATASETS_OFFLINE=1``: no hub
access), local only.

The image column (``--image-column``) is an ``Image`` feature or raw image bytes; the caption
column (``--caption-column``) a string or a list of strings (several captions per image). With no
caption column given or present the dataset is image-only; with no image column, text-only. Ids
are the row numbers (``SPLIT/ROW`` for a ``DatasetDict``), rows in the dataset's order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from sotalign.checks import InputError
from sotalign.data.datasets import ImageDataset, ImageTextDataset, TextDataset
from sotalign.data.formats.common import ImageCheck, open_image, report_bad

SAVED_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")  # what save_to_disk writes
HUB_PARQUET = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}\.parquet$")  # the Hub's shard names
BATCH = 256  # rows read at a time while checking images


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def open_splits(location: str) -> tuple[dict, bool]:
    """(split -> ``datasets.Dataset``, whether the splits are named) of a saved folder or Parquet file(s)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # never reach the hub, whatever a feature or config asks
    import datasets
    import pyarrow.parquet as pq

    path = Path(location)
    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            return dict(loaded), True
        return {"all": loaded}, False
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.is_file() and f.suffix == ".parquet" for f in files):
        raise InputError(f"{location} is neither a save_to_disk folder nor Parquet files of a Hugging Face dataset")
    groups: dict[str, list[Path]] = {}
    for file in files:
        match = HUB_PARQUET.match(file.name)
        groups.setdefault(match.group("split") if match and path.is_dir() else "all", []).append(file)
    try:
        return {
            split: datasets.Dataset(pq.read_table(group if len(group) > 1 else group[0]))
            for split, group in groups.items()
        }, len(groups) > 1 or "all" not in groups
    except Exception as error:  # pyarrow and datasets raise several types for a bad file
        raise InputError(f"{location}: cannot read its Parquet files as a dataset ({error})") from None


def image_bytes(value) -> bytes | None:
    """The bytes of an ``Image`` feature read undecoded ({bytes, path}) or of a binary column."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        return Path(value["path"]).read_bytes() if value.get("path") and Path(value["path"]).is_file() else None
    return value


def load_hf(
    location: str,
    name: str,
    image_column: str | None = "image",
    caption_column: str | None = "caption",
    skip_bad: bool = False,
) -> ImageTextDataset | ImageDataset | TextDataset:
    import datasets

    location = os.path.abspath(location)
    splits, named = open_splits(location)
    columns = next(iter(splits.values())).column_names
    has_images = bool(image_column) and image_column in columns
    has_texts = bool(caption_column) and caption_column in columns
    if not has_images and not has_texts:
        raise InputError(
            f"{location} has neither the image column {image_column!r} nor the caption column {caption_column!r}; "
            f"columns: {', '.join(columns)} (pass --image-column / --caption-column)"
        )
    raw: dict[str, object] = {}
    for split, ds in splits.items():
        if has_images and isinstance(ds.features.get(image_column), datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        raw[split] = ds

    bad, keep, texts = [], [], []
    check = ImageCheck(location, total=sum(len(ds) for ds in raw.values())) if has_images else None
    for split, ds in raw.items():
        wanted = [c for c in (image_column if has_images else None, caption_column if has_texts else None) if c]
        for start in range(0, len(ds), BATCH):
            batch = ds.select_columns(wanted)[start : start + BATCH]
            for offset in range(len(batch[wanted[0]])):
                row = start + offset
                row_id = f"{split}/{row}" if named else str(row)
                why = None
                if has_images:
                    why = check.check(row_id, image_bytes(batch[image_column][offset]))
                captions: list[str] = []
                if has_texts:
                    value = batch[caption_column][offset]
                    values = value if isinstance(value, list) else [value]
                    captions = [str(v).strip() for v in values if v is not None and str(v).strip()]
                    why = why or (None if captions else "empty caption")
                if why:
                    bad.append((f"{split} row {row}", why))
                else:
                    keep.append((split, row, row_id))
                    texts.append(captions)
    if check is not None:
        check.close()
    report_bad(bad, location, skip_bad)
    if not keep:
        raise InputError(f"{location}: no usable rows")
    split_names = list(raw)
    index = {s: np.asarray([k for k, (split, _, _) in enumerate(keep) if split == s]) for s in split_names}
    index = {s: v for s, v in index.items() if len(v)}
    source = {
        "name": location,
        "format": "hf",
        "dataset_name": name,
        "image_column": image_column if has_images else None,
        "caption_column": caption_column if has_texts else None,
        "skip_bad": True,
    }
    ids = [row_id for _, _, row_id in keep]
    if not has_images:
        flat = [(f"{i}#{k}" if len(t) > 1 else i, c) for i, t in zip(ids, texts) for k, c in enumerate(t)]
        owner = np.asarray([k for k, t in enumerate(texts) for _ in t])
        return TextDataset(
            name,
            [i for i, _ in flat],
            [c for _, c in flat],
            {s: np.flatnonzero(np.isin(owner, v)) for s, v in index.items()},
            skipped=bad,
            source=source,
        )

    def load_image(i: int):
        split, row, _ = keep[i]
        return open_image(image_bytes(image_source[split][row][image_column]))

    image_source = {split: ds.select_columns([image_column]) for split, ds in raw.items()}

    if not has_texts:
        return ImageDataset(name, ids, index, load_image, bad, source, check.duplicates)
    return ImageTextDataset(
        name=name,
        image_ids=ids,
        captions=[c for t in texts for c in t],
        caption_image=np.asarray([k for k, t in enumerate(texts) for _ in t]),
        splits=index,
        load_image=load_image,
        skipped=bad,
        source=source,
        duplicates=check.duplicates,
    )
