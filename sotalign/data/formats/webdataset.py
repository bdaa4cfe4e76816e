"""WebDataset tar shards as img2dataset writes them: ``KEY.jpg`` (or png, jpeg, webp) + ``KEY.txt``
(+ an optional ``KEY.json``, ignored), shards named by a brace pattern (``shards/{00000..00099}.tar``),
a folder or prefix of ``.tar`` files, or one ``.tar``; local or on object storage (``s3://...``),
every byte read through ``sotalign.data.fs``.

Why not the ``webdataset`` library: it streams samples in order, and the extraction needs random
access by row (tables are written in shards of 1024 rows, resumed shard by shard, and split over
Ray actors that each read only their rows). So each tar is read once with ``tarfile`` in one
forward pass (``fs.open_stream``): member offsets and sizes are indexed, the captions kept and every
image verified and hashed on the way; an image is then read by seeking to its offset
(``fs.open_input``), never by re-scanning the tar.

Rows are in a fixed order (shards sorted, members in tar order), ids are ``DATASET/KEY``; when a
key occurs in two shards, every id is prefixed with its shard's name (``DATASET/00003/KEY``). Shards
with no ``.txt`` member make an image-only source (unpaired images), shards with no image a
text-only one. Every row is in split ``all``. A file that is not a tar is an ``InputError``.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections import Counter
from dataclasses import dataclass

import numpy as np
from braceexpand import braceexpand

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import ImageDataset, ImageTextDataset, TextDataset
from sotalign.data.formats.common import ImageCheck, open_image, report_bad

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # img2dataset's output_format choices (and jpeg)
TEXT_EXTENSION = "txt"  # img2dataset writes the caption as KEY.txt
KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's own split (base_plus_ext)


def is_pattern(location: str) -> bool:
    return "{" in location and "}" in location


def shard_locations(location: str) -> list[str]:
    """The shards a pattern, folder (prefix) or single file names, sorted (the row order)."""
    if is_pattern(location):
        shards = sorted(set(braceexpand(location)))
        missing = [s for s in shards if not fs.is_file(s)]
        if missing:
            raise InputError(
                f"{len(missing)} of the {len(shards)} shards of {location} are missing, first: {missing[0]}"
            )
        return shards
    if fs.is_dir(location):
        shards = [f for f in fs.list_files(location) if f.endswith(".tar")]
        if not shards:
            raise InputError(f"{location} holds no .tar shards")
        return shards
    if not fs.is_file(location):
        raise InputError(f"no WebDataset shard at {location}")
    return [location]


@dataclass
class Sample:
    shard: int
    key: str
    image: tuple[int, int] | None = None  # (offset, size) of the image member's bytes
    image_problem: str | None = None
    caption: str | None = None
    duplicate_key: bool = False


def index_shard(shard: int, location: str, check: ImageCheck) -> list[Sample]:
    """One forward pass over a tar: its samples in tar order, images checked."""
    samples: dict[str, Sample] = {}
    order: list[Sample] = []
    with fs.open_stream(location) as stream:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|")
            for member in tar:
                match = KEY_AND_EXTENSION.match(member.name)
                if not member.isfile() or match is None:
                    continue
                key, extension = match.group(1), match.group(2).lower()
                if extension not in IMAGE_EXTENSIONS and extension != TEXT_EXTENSION:
                    continue  # KEY.json and the like: metadata the extraction does not read
                sample = samples.get(key)
                if sample is None:
                    sample = samples[key] = Sample(shard, key)
                    order.append(sample)
                data = tar.extractfile(member).read()
                if extension == TEXT_EXTENSION:
                    sample.duplicate_key |= sample.caption is not None
                    if sample.caption is None:
                        sample.caption = data.decode("utf-8", errors="replace").strip()
                elif sample.image is not None:
                    sample.duplicate_key = True
                else:
                    sample.image = (member.offset_data, member.size)
                    sample.image_problem = check.check(f"{location}: {key}", data)
        except tarfile.TarError as error:
            raise InputError(f"{location} is not a tar file ({error}); expected WebDataset .tar shards") from None
    return order


class ShardReader:
    """Reads an image's bytes by seeking in its shard; keeps the last shard open (rows come in shard order)."""

    def __init__(self, shards: list[str]):
        self.shards = shards
        self.open: tuple[int, object] | None = None

    def read(self, shard: int, offset: int, size: int) -> bytes:
        if self.open is None or self.open[0] != shard:
            if self.open is not None:
                self.open[1].close()
            self.open = (shard, fs.open_input(self.shards[shard]))
        handle = self.open[1]
        handle.seek(offset)
        return handle.read(size)

    def __getstate__(self) -> dict:
        """Pickled without its open file (the dataset is shipped to Ray actors, which open their own)."""
        return {"shards": self.shards, "open": None}


def load_webdataset(location: str, name: str, skip_bad: bool = False) -> ImageTextDataset | ImageDataset | TextDataset:
    location = str(location) if fs.is_remote(location) else os.path.abspath(location)
    shards = shard_locations(location)
    samples: list[Sample] = []
    with ImageCheck(location) as check:
        for index, shard in enumerate(shards):
            samples += index_shard(index, shard, check)
            check.bar.total = round(check.bar.n / (index + 1) * len(shards))  # estimated from the shards read: an ETA
            check.bar.refresh()
        check.bar.total = check.bar.n
    if not samples:
        raise InputError(f"{location}: no samples (no {'/'.join(IMAGE_EXTENSIONS)} or .txt members)")
    has_images = any(s.image is not None for s in samples)
    has_texts = any(s.caption is not None for s in samples)
    shard_names = [fs.name(s).removesuffix(".tar") for s in shards]
    collide = any(n > 1 for n in Counter(s.key for s in samples).values())
    keys = [f"{shard_names[s.shard]}/{s.key}" if collide else s.key for s in samples]

    bad, keep, kept_keys = [], [], []
    for sample, key in zip(samples, keys):
        why = None
        if sample.duplicate_key:
            why = "duplicate key in its shard"
        elif has_images and sample.image is None:
            why = "no image"
        elif sample.image_problem:
            why = sample.image_problem
        elif has_texts and sample.caption is None:
            why = "no caption"
        elif has_texts and not sample.caption:
            why = "empty caption"
        if why:
            bad.append((f"{shards[sample.shard]}: {sample.key}", why))
        else:
            keep.append(sample)
            kept_keys.append(key)
    report_bad(bad, location, skip_bad)
    if not keep:
        raise InputError(f"{location}: no usable samples")
    source = {"name": location, "format": "webdataset", "dataset_name": name, "skip_bad": True}
    everything = {"all": np.arange(len(keep))}
    if not has_images:
        return TextDataset(name, kept_keys, [s.caption for s in keep], everything, skipped=bad, source=source)
    reader = ShardReader(shards)

    def load_image(i: int):
        sample = keep[i]
        return open_image(reader.read(sample.shard, *sample.image))

    duplicates = check.duplicates
    if not has_texts:
        return ImageDataset(name, kept_keys, everything, load_image, bad, source, duplicates)
    return ImageTextDataset(
        name=name,
        image_ids=kept_keys,
        captions=[s.caption for s in keep],
        caption_image=np.arange(len(keep)),
        splits=everything,
        load_image=load_image,
        skipped=bad,
        source=source,
        duplicates=duplicates,
    )
