"""Iconify icons as images: the SVG body in its box, rendered by resvg on white.

resvg (the ``resvg-py`` wheel) is a maintained SVG renderer that ships inside the wheel, so no
system library is needed; it renders an emoji at 128 px in 3 ms (twemoji) to 60 ms (fluent-emoji's
gradients) here. Monochrome sets draw with ``currentColor``, which we set to black. The icon's
box (``left top width height``) is fitted into the square, centred (SVG's default
``xMidYMid meet``), so a wide icon gets white bands. System fonts are not loaded: no icon of the
sets we use has text, and a font found on one machine but not another would change the pixels.
"""

from __future__ import annotations

import io

from PIL import Image

from sotalign.checks import InputError
from sotalign.data.iconify.fetch import IconSet

IMAGE_SIZE = 128  # as the bundled openmoji benchmark (sotalign/data/openmoji.py)


def icon_svg(icon_set: IconSet, name: str, size: int = IMAGE_SIZE) -> str:
    """A standalone SVG document of icon ``name`` at ``size`` x ``size`` pixels."""
    icon = icon_set.icons[name]
    box = " ".join(str(icon.get(key, getattr(icon_set, key))) for key in ("left", "top", "width", "height"))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{size}" height="{size}" viewBox="{box}" color="#000000">{icon["body"]}</svg>'
    )


def render_svg(svg: str, what: str = "SVG") -> Image.Image:
    """An RGB image of ``svg`` on a white background; ``what`` names it in errors."""
    import resvg_py

    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, background="#ffffff", skip_system_fonts=True)
    except ValueError as error:
        raise InputError(f"cannot render {what}: {error}") from error
    return Image.open(io.BytesIO(bytes(png))).convert("RGB")


def render_icon(icon_set: IconSet, name: str, size: int = IMAGE_SIZE) -> Image.Image:
    """Icon ``name`` of ``icon_set`` as a ``size`` x ``size`` RGB image on white."""
    return render_svg(icon_svg(icon_set, name, size), f"{icon_set.prefix}:{name}")
