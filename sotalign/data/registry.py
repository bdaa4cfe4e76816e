"""Datasets by name: a bundled benchmark, an Iconify dataset, or a user's data in one of the formats of
``sotalign.data.formats`` (image-caption table, class folder, image folder, texts, WebDataset shards,
Hugging Face dataset, COCO caption JSON), local or on object storage where the format allows."""

from __future__ import annotations

import os
from pathlib import Path

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import AnyDataset

BUNDLED = ("openmoji", "digits", "digits-captions")
ICONIFY = (
    "iconify-emoji",
    "iconify-mono",
)  # icon sets fetched with npm (sotalign.data.iconify); also iconify:SET[,SET...]


NPM_CACHE = "_npm"  # STORE/_npm: the packed Iconify sets (`sotalign embed` keeps them there)


def npm_cache(store: str | os.PathLike) -> str:
    """The folder the Iconify sets of ``store`` are packed into: ``STORE/_npm`` for a local store; a local
    ``~/.cache/sotalign/_npm`` for one on object storage (npm writes files; each machine packs its own)."""
    if fs.is_remote(store):
        return str(Path.home() / ".cache" / "sotalign" / NPM_CACHE)
    return str((Path(store) / NPM_CACHE).resolve())


def is_iconify(name: str) -> bool:
    return name in ICONIFY or name.startswith("iconify:")


def load_dataset(name: str, **options) -> AnyDataset:
    """``options`` go to ``sotalign.data.formats.load_user_dataset`` (``format``, ``dataset_name``,
    ``image_column``, ``caption_column``, ``image_root``, ``skip_bad``: what a user dataset's
    recorded ``source`` holds, so ``load_dataset(**source)`` re-reads it), or,
    for an Iconify dataset, ``npm_cache``: the folder its packed sets are kept in (``sotalign embed``
    uses ``STORE/_npm``)."""
    if is_iconify(name):
        from sotalign.data.iconify import load_iconify

        if options.get("npm_cache") is None:
            raise InputError(f"dataset {name!r} needs npm_cache: a folder to keep its npm-packed icon sets in")
        return load_iconify(name, options["npm_cache"])
    if name == "openmoji":
        from sotalign.data.openmoji import load_openmoji

        return load_openmoji()
    if name == "digits":
        from sotalign.data.digits import load_digits

        return load_digits()
    if name == "digits-captions":
        from sotalign.data.digits import load_digit_captions

        return load_digit_captions()
    if fs.is_remote(name) or "{" in name or Path(name).exists():
        from sotalign.data.formats import load_user_dataset

        return load_user_dataset(name, **options)
    raise InputError(
        f"unknown dataset {name!r}: neither a bundled one ({', '.join(BUNDLED)}), an Iconify one "
        f"({', '.join(ICONIFY)}, iconify:SET[,SET...]) nor an existing file, folder or shard pattern"
    )
