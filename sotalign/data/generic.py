"""User datasets: an image-caption table (CSV, JSONL or Parquet) or a class-labelled image folder.

Table: one row per (image path, caption); an image may appear on several rows (several
captions). Paths are relative to the table's folder unless absolute. An optional ``split``
column names each row's split; without it every row is in split ``all``.

Folder: ``ROOT/<class name>/<image files>``; class names are the folder names with ``_``
read as spaces; prompts use CLIP-style templates. Every image is in split ``all``.

Bad rows (missing file, unreadable image, empty caption) raise one ``InputError`` with the
count and the first offenders, unless ``skip_bad`` drops them (listed in ``dataset.skipped``).
Images are checked up front (``PIL.Image.verify``, behind a progress bar) so that extraction never dies half-way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from sotalign.checks import InputError
from sotalign.data.datasets import ClassificationDataset, ImageTextDataset
from sotalign.data.formats.common import ImageCheck

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FOLDER_TEMPLATES = [
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of the {}.",
    "a close-up photo of a {}.",
]  # CLIP-style


def _read_rows(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if suffix in (".jsonl", ".json"):
        import pyarrow.json as pjson

        return pjson.read_json(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    raise InputError(f"{path}: unsupported table format {suffix!r}; use .csv, .jsonl or .parquet")


def _bytes_or_none(path: Path) -> bytes | None:
    """The file's bytes for the image check; None (a missing file) where there is no file to read."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _report(bad: list[tuple[str, str]], where: str, skip_bad: bool) -> None:
    if bad and not skip_bad:
        first = "; ".join(f"{item} ({why})" for item, why in bad[:5])
        raise InputError(f"{len(bad)} bad rows in {where}, first: {first}. Fix them or pass --skip-bad to skip them")


def load_image_text_table(
    path: str | Path,
    image_column: str = "image",
    caption_column: str = "caption",
    skip_bad: bool = False,
) -> ImageTextDataset:
    path = Path(path)
    table = _read_rows(path)
    for column in (image_column, caption_column):
        if column not in table.column_names:
            raise InputError(f"{path} has no column {column!r}; columns: {', '.join(table.column_names)}")
    images = [str(v) if v is not None else "" for v in table.column(image_column).to_pylist()]
    captions = [str(v).strip() if v is not None else "" for v in table.column(caption_column).to_pylist()]
    splits = table.column("split").to_pylist() if "split" in table.column_names else ["all"] * len(images)

    problems: dict[str, str | None] = {}
    with ImageCheck(str(path), total=len(set(images))) as check:  # each image once, behind a bar
        for image in images:
            if image not in problems:
                problems[image] = check.check(image, _bytes_or_none(path.parent / image) if image else None)
    bad, keep = [], []
    for row, (image, caption) in enumerate(zip(images, captions)):
        why = problems[image] or (None if caption else "empty caption")
        (bad.append((f"row {row}: {image}", why)) if why else keep.append(row))
    _report(bad, str(path), skip_bad)
    if not keep:
        raise InputError(f"{path}: no usable rows")

    image_ids: list[str] = []
    position: dict[str, int] = {}
    owner, split_of, conflicts = [], {}, []
    for row in keep:
        if images[row] not in position:
            position[images[row]] = len(image_ids)
            image_ids.append(images[row])
            split_of[position[images[row]]] = str(splits[row])
        elif split_of[position[images[row]]] != str(splits[row]):
            conflicts.append(f"row {row}: {images[row]} ({split_of[position[images[row]]]} vs {splits[row]})")
        owner.append(position[images[row]])
    if conflicts:
        raise InputError(
            f"{len(conflicts)} rows put an image in two splits (a test leak), first: {'; '.join(conflicts[:5])}"
        )
    split_names = sorted(set(split_of.values()))
    return ImageTextDataset(
        name=path.stem,
        image_ids=image_ids,
        captions=[captions[r] for r in keep],
        caption_image=np.asarray(owner),
        splits={s: np.asarray([i for i, v in split_of.items() if v == s]) for s in split_names},
        load_image=lambda i: Image.open(path.parent / image_ids[i]).convert("RGB"),
        skipped=bad,
        duplicates=check.duplicates,
        source={  # rows skipped now are not in the store: skip them when re-read
            "name": str(path.resolve()),
            "image_column": image_column,
            "caption_column": caption_column,
            "skip_bad": True,
        },
    )


def load_image_folder(root: str | Path, skip_bad: bool = False) -> ClassificationDataset:
    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise InputError(f"{root} must hold one sub-folder per class (found {len(classes)})")
    listed = [
        (label, file)
        for label, folder in enumerate(classes)
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    ]
    files, labels, bad = [], [], []
    with ImageCheck(str(root), total=len(listed)) as check:
        for label, file in listed:
            why = check.check(str(file.relative_to(root)), _bytes_or_none(file))
            if why:
                bad.append((str(file.relative_to(root)), why))
            else:
                files.append(file)
                labels.append(label)
    _report(bad, str(root), skip_bad)
    if not files:
        raise InputError(f"{root}: no readable images")
    return ClassificationDataset(
        name=root.name,
        image_ids=[str(f.relative_to(root)) for f in files],
        labels=np.asarray(labels),
        class_names=[c.name.replace("_", " ") for c in classes],
        templates=FOLDER_TEMPLATES,
        splits={"all": np.arange(len(files))},
        load_image=lambda i: Image.open(files[i]).convert("RGB"),
        skipped=bad,
    )
