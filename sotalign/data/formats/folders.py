"""A plain folder of images (recursive, no class sub-folders) read as unpaired images.

Files are every image under the folder at any depth (``IMAGE_SUFFIXES``), sorted by their path
relative to it, which is also their id (``DATASET/sub/dir/file.jpg``): a fixed row order, so the
extraction resumes and two reads give the same ids. Local or on object storage (``fs``). Every
image is in split ``all``.
"""

from __future__ import annotations

import os

import numpy as np

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import ImageDataset
from sotalign.data.formats.common import ImageCheck, open_image, report_bad
from sotalign.data.generic import IMAGE_SUFFIXES


def image_files(location: str) -> list[tuple[str, str]]:
    """(relative id with ``/`` separators, location) of every image under ``location``, sorted by id."""
    base = str(location) if fs.is_remote(location) else os.path.abspath(location)
    base = base.rstrip("/").rstrip(os.sep)  # list_files joins the parts to this
    files = []
    for file in fs.list_files(base, recursive=True):
        relative = file[len(base) :].lstrip("/").lstrip(os.sep).replace(os.sep, "/")
        if "." + relative.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES:
            files.append((relative, file))
    return sorted(files)


def read_or_none(location: str) -> bytes | None:
    try:
        return fs.read_bytes(location)
    except InputError:  # gone since it was listed, or unreadable
        return None


def load_plain_image_folder(location: str, name: str, skip_bad: bool = False) -> ImageDataset:
    location = str(location) if fs.is_remote(location) else os.path.abspath(location)
    files = image_files(location)
    if not files:
        raise InputError(f"{location}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) at any depth")
    bad, keep = [], []
    with ImageCheck(location, total=len(files)) as check:
        for relative, file in files:
            why = check.check(relative, read_or_none(file))
            (bad.append((relative, why)) if why else keep.append((relative, file)))
    report_bad(bad, location, skip_bad)
    if not keep:
        raise InputError(f"{location}: no readable images")
    return ImageDataset(
        name=name,
        image_ids=[relative for relative, _ in keep],
        splits={"all": np.arange(len(keep))},
        load_image=lambda i: open_image(fs.read_bytes(keep[i][1])),
        skipped=bad,
        source={"name": location, "format": "images", "dataset_name": name, "skip_bad": True},
        duplicates=check.duplicates,
    )
