"""The formats researchers hold, read into dataset descriptions the extractor consumes.

``load_user_dataset(location, format=...)`` reads a user's data (local, or ``s3://...`` where the
format allows) as an ``ImageTextDataset`` (pairs), ``ImageDataset`` (unpaired images),
``TextDataset`` (unpaired texts) or ``ClassificationDataset`` (class folders). One module per
format: ``webdataset`` (tar shards), ``hf`` (``save_to_disk`` folders, their Parquet), ``coco``
(caption JSON), ``folders`` (a plain folder of images), ``texts`` (text files and columns); the
image-caption table and the class folder stay in ``sotalign.data.generic``.

Detection (``format="auto"``; an explicit format always wins), in this order:

- a brace pattern (``{00000..00099}``) or a ``.tar`` file: ``webdataset``;
- a folder: ``hf`` if it holds what ``save_to_disk`` writes (``dataset_dict.json``, ``state.json``,
  ``dataset_info.json``); ``webdataset`` if its files are all ``.tar``; ``hf`` if they are all
  ``.parquet``; ``classes`` if it is exactly the class layout (no image at its top, every image one
  folder down, in at least two folders); else ``images`` (every image at any depth);
- ``.txt``: ``texts``; ``.json``: ``coco``;
- ``.csv`` / ``.jsonl`` / ``.parquet``: ``table`` when it has the image column (paths) and the
  caption column; ``hf`` when the image column holds image bytes (a Parquet ``Image`` feature or
  binary: pairs, or unpaired images without the caption column); ``texts`` when it has the caption
  column and no image column.

Each dataset records its ``source`` (location, format, columns, image root, ``skip_bad=True``:
rows skipped when embedded are not in the store) so that ``load_dataset(**source)`` re-reads it.
"""

from __future__ import annotations

import os

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import AnyDataset
from sotalign.data.formats.common import describe_duplicates
from sotalign.data.formats.webdataset import is_pattern

FORMATS = ("auto", "table", "classes", "images", "texts", "webdataset", "hf", "coco")
TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")

__all__ = ["FORMATS", "default_name", "describe_duplicates", "detect_format", "load_user_dataset"]


def _suffix(location: str) -> str:
    tail = fs.name(location)
    return "." + tail.rsplit(".", 1)[-1].lower() if "." in tail else ""


def default_name(location: str) -> str:
    """The store name of a location: a pattern's parent folder, a file's stem, a folder's name."""
    location = str(location).rstrip("/").rstrip(os.sep)
    if is_pattern(location):
        return fs.name(fs.parent(location))
    stem = fs.name(location)
    return stem.rsplit(".", 1)[0] if _suffix(location) and not fs.is_dir(location) else stem


def _is_class_layout(location: str) -> bool:
    from sotalign.data.formats.folders import image_files

    files = [relative.split("/") for relative, _ in image_files(location)]
    return bool(files) and all(len(parts) == 2 for parts in files) and len({p[0] for p in files}) >= 2


def _table_format(location: str, image_column: str | None, caption_column: str | None) -> str:
    import pyarrow as pa

    from sotalign.data.formats.texts import read_table

    if _suffix(location) == ".parquet":
        import pyarrow.parquet as pq

        with fs.open_input(location) as f:
            schema = pq.read_schema(f)
    else:
        schema = read_table(location).schema
    names = schema.names
    image = schema.field(image_column).type if image_column and image_column in names else None
    has_caption = bool(caption_column) and caption_column in names
    if image is not None and (
        pa.types.is_binary(image)
        or pa.types.is_large_binary(image)
        or (pa.types.is_struct(image) and image.get_field_index("bytes") >= 0)
    ):
        return "hf"
    if image is not None and has_caption:
        return "table"
    if image is None and has_caption:
        return "texts"
    raise InputError(
        f"{location}: cannot tell what it holds: with columns {', '.join(names)}, expected the image column "
        f"{image_column!r} (paths or bytes) and/or the caption column {caption_column!r} "
        "(pass --image-column / --caption-column, or --format)"
    )


def detect_format(location: str, image_column: str | None = "image", caption_column: str | None = "caption") -> str:
    """The format ``auto`` reads ``location`` as (the rules in the module docstring)."""
    location = str(location)
    if is_pattern(location) or _suffix(location) == ".tar":
        return "webdataset"
    if fs.is_dir(location):
        from sotalign.data.formats.hf import SAVED_MARKERS

        if any(fs.is_file(fs.join(location, marker)) for marker in SAVED_MARKERS):
            return "hf"
        top = fs.list_files(location)
        if top and all(_suffix(f) == ".tar" for f in top):
            return "webdataset"
        if top and all(_suffix(f) == ".parquet" for f in top):
            return "hf"
        return "classes" if _is_class_layout(location) else "images"
    if not fs.is_file(location):
        raise InputError(f"no file or folder at {location}")
    suffix = _suffix(location)
    if suffix == ".txt":
        return "texts"
    if suffix == ".json":
        return "coco"
    if suffix in TABLE_SUFFIXES:
        return _table_format(location, image_column, caption_column)
    raise InputError(
        f"{location}: cannot tell its format from {suffix or 'no suffix'!r}; pass --format ({', '.join(FORMATS[1:])})"
    )


def load_user_dataset(
    location: str,
    format: str = "auto",  # noqa: A002 (the CLI's --format)
    dataset_name: str | None = None,
    image_column: str | None = "image",  # generic.py's default column names
    caption_column: str | None = "caption",
    image_root: str | None = None,
    skip_bad: bool = False,
) -> AnyDataset:
    """Read ``location`` in ``format`` (``auto``: detected) under the store name ``dataset_name``
    (default: ``default_name``)."""
    location = str(location)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "auto":
        format = detect_format(location, image_column, caption_column)  # noqa: A001
    name = dataset_name or default_name(location)
    if format == "webdataset":
        from sotalign.data.formats.webdataset import load_webdataset

        return load_webdataset(location, name, skip_bad=skip_bad)
    if format == "hf" or (format == "images" and _suffix(location) == ".parquet"):
        from sotalign.data.formats.hf import load_hf

        captions = caption_column if format == "hf" else None  # images: a Parquet column of image bytes
        return load_hf(location, name, image_column=image_column, caption_column=captions, skip_bad=skip_bad)
    if format == "coco":
        from sotalign.data.formats.coco import load_coco

        return load_coco(location, name, image_root=image_root, skip_bad=skip_bad)
    if format == "images":
        from sotalign.data.formats.folders import load_plain_image_folder

        return load_plain_image_folder(location, name, skip_bad=skip_bad)
    if format == "texts":
        from sotalign.data.formats.texts import load_texts

        return load_texts(location, name, caption_column=caption_column or "caption", skip_bad=skip_bad)
    if fs.is_remote(location):
        raise InputError(f"format {format!r} reads local files only, not {location}")
    from sotalign.data import generic

    if format == "classes":
        dataset = generic.load_image_folder(location, skip_bad=skip_bad)
        dataset.name = name
        return dataset
    dataset = generic.load_image_text_table(
        location, image_column=image_column or "image", caption_column=caption_column or "caption", skip_bad=skip_bad
    )
    dataset.name = name
    dataset.source.update(format="table", dataset_name=name)
    return dataset
