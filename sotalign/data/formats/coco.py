"""COCO caption JSON (``images[].id/file_name``, ``annotations[].image_id/caption``) and its images.

Images are read from an image root (``--image-root``; default: the JSON's folder), local or on
object storage (``fs``), in the JSON's ``images`` order, with their captions in the
``annotations`` order: several captions per image, ids ``DATASET/FILE_NAME`` (captions
``DATASET/FILE_NAME#k``). An annotation naming an image the JSON does not list is bad input, not
a bad row: one ``InputError`` always. Bad rows: an image missing or unreadable, an empty caption,
an image left with no caption. Every image is in split ``all``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import ImageTextDataset
from sotalign.data.formats.common import ImageCheck, open_image, report_bad
from sotalign.data.formats.folders import read_or_none


def read_coco(location: str) -> tuple[list[dict], list[dict]]:
    try:
        document = json.loads(fs.read_text(location))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{location} is not JSON: {error}") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in ("images", "annotations")):
        raise InputError(f"{location} is not a COCO caption file: expected lists 'images' and 'annotations'")
    return document["images"], document["annotations"]


def load_coco(location: str, name: str, image_root: str | None = None, skip_bad: bool = False) -> ImageTextDataset:
    location = str(location) if fs.is_remote(location) else os.path.abspath(location)
    root = str(image_root or fs.parent(location))
    root = root if fs.is_remote(root) else os.path.abspath(root)
    images, annotations = read_coco(location)
    try:
        files = {image["id"]: str(image["file_name"]) for image in images}
        pairs = [
            (a["image_id"], a.get("id", n), str(a.get("caption") or "").strip()) for n, a in enumerate(annotations)
        ]
    except (KeyError, TypeError) as error:
        raise InputError(
            f"{location}: an image or annotation lacks {error} (COCO: images[].id/file_name, annotations[].image_id/caption)"
        ) from None
    if len(files) != len(images) or len(set(files.values())) != len(files):
        raise InputError(f"{location}: image ids or file names repeat in 'images'")
    unknown = [(annotation, image) for image, annotation, _ in pairs if image not in files]
    if unknown:
        first = "; ".join(f"annotation {a} -> image {i}" for a, i in unknown[:5])
        raise InputError(f"{location}: {len(unknown)} annotations name an image id not in 'images', first: {first}")

    bad: list[tuple[str, str]] = []
    captions: dict[int, list[str]] = {image_id: [] for image_id in files}
    for image, annotation, caption in pairs:
        (captions[image].append(caption) if caption else bad.append((f"annotation {annotation}", "empty caption")))
    keep = []
    with ImageCheck(location, total=len(files)) as check:
        for image_id, file in files.items():
            why = check.check(file, read_or_none(fs.join(root, *file.split("/"))))
            why = why or (None if captions[image_id] else "no caption")
            (bad.append((file, why)) if why else keep.append(image_id))
    report_bad(bad, location, skip_bad)
    if not keep:
        raise InputError(f"{location}: no usable images")
    image_ids = [files[i] for i in keep]
    owner = [k for k, image_id in enumerate(keep) for _ in captions[image_id]]
    return ImageTextDataset(
        name=name,
        image_ids=image_ids,
        captions=[c for image_id in keep for c in captions[image_id]],
        caption_image=np.asarray(owner),
        splits={"all": np.arange(len(keep))},
        load_image=lambda i: open_image(fs.read_bytes(fs.join(root, *image_ids[i].split("/")))),
        skipped=bad,
        source={"name": location, "format": "coco", "dataset_name": name, "image_root": root, "skip_bad": True},
        duplicates=check.duplicates,
    )
