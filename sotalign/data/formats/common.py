"""What every user-data reader shares: the up-front image check, bad-row reports, default names.

Every image is opened once before extraction (``PIL.Image.verify``), so that a broken file is
named now, not an hour into an embedding job; its bytes are hashed on the way, so that the same
picture stored twice in one source is reported (a training pair and a test pair with one image
would be a leak). Bad rows are listed as ``WHERE: ITEM (why)``.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image
from tqdm.auto import tqdm

from sotalign.checks import InputError

SHOWN = 5  # offenders named in one error or report line (generic.py names as many)


def report_bad(bad: list[tuple[str, str]], where: str, skip_bad: bool) -> None:
    """Raise one ``InputError`` with the count and the first offenders, unless ``skip_bad``."""
    if bad and not skip_bad:
        first = "; ".join(f"{item} ({why})" for item, why in bad[:SHOWN])
        raise InputError(f"{len(bad)} bad rows in {where}, first: {first}. Fix them or pass --skip-bad to skip them")


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a readable image, or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:  # PIL raises many types for a broken file
        return "unreadable image"
    return None


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


class ImageCheck:
    """Verifies images one at a time (``check(label, data)``) behind a progress bar (rate, ETA) and
    collects ``duplicates``: (label, the first label with the same bytes)."""

    def __init__(self, where: str, total: int | None = None):
        self.bar = tqdm(total=total, desc=f"checking images of {where}", unit="image")
        self.first: dict[bytes, str] = {}
        self.duplicates: list[tuple[str, str]] = []

    def check(self, label: str, data: bytes | None) -> str | None:
        """Why the image is bad ("missing file", "unreadable image"), or None."""
        self.bar.update(1)
        if data is None:
            return "missing file"
        problem = image_problem(data)
        if problem is None:
            digest = hashlib.sha1(data).digest()
            if digest in self.first:
                self.duplicates.append((label, self.first[digest]))
            else:
                self.first[digest] = label
        return problem

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ImageCheck:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_duplicates(duplicates: list[tuple[str, str]], where: str) -> str:
    """The printed line of a source's duplicate images (not an error: the user decides)."""
    shown = "; ".join(f"{a} = {b}" for a, b in duplicates[:SHOWN])
    more = " ..." if len(duplicates) > SHOWN else ""
    return f"{len(duplicates)} duplicate images (same bytes) in {where}: {shown}{more}"
