"""Pictures of what a run retrieves: its retrieval gallery, a search's contact sheet, and several
galleries side by side (``sotalign compare --gallery``). Drawn with PIL: each is a grid of
thumbnails and short texts, no plotting library needed.

A gallery has two panels over the same seeded queries for every run of a split
(``sotalign.experiments.retrieval_cases``): each query caption with its top-5 images, each query image with
its top-5 captions. A correct candidate has a green frame; where none of the top 5 is correct,
the right one follows in orange with its rank.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sotalign.experiments.retrieval_cases import QueryResult

THUMB = 96  # px: a thumbnail's side
CELL = THUMB + 16  # px: a candidate's cell (frame and score below)
LABEL_W = 230  # px: the query's column
HEADER_H = 54  # px: the title lines
ROW_H = CELL + 20
TEXT_CELL_W = 150  # px: a caption candidate's cell
GREEN, ORANGE, GREY, INK = (30, 150, 60), (230, 130, 0), (200, 200, 200), (20, 20, 20)


@functools.lru_cache(maxsize=4)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled DejaVu-like FreeType font: no system fonts needed


def thumbnail(image: Image.Image, side: int = THUMB) -> Image.Image:
    """``image`` fitted into a white ``side`` x ``side`` square."""
    image = image.convert("RGB")
    image.thumbnail((side, side))
    square = Image.new("RGB", (side, side), "white")
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def wrapped(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width_chars: int, lines: int, size: int = 13):
    """``text`` wrapped to ``width_chars`` columns, at most ``lines`` lines (the last one cut with ...)."""
    rows = textwrap.wrap(text, width_chars) or [""]
    if len(rows) > lines:
        rows = rows[:lines]
        rows[-1] = rows[-1][: width_chars - 3] + "..."
    draw.multiline_text(xy, "\n".join(rows), fill=INK, font=font(size), spacing=2)


def framed(canvas: Image.Image, image: Image.Image, xy: tuple[int, int], colour) -> None:
    x, y = xy
    canvas.paste(thumbnail(image), (x + 4, y + 4))
    ImageDraw.Draw(canvas).rectangle([x + 1, y + 1, x + THUMB + 6, y + THUMB + 6], outline=colour, width=3)


def draw_gallery(
    by_text: list[QueryResult],
    by_image: list[QueryResult],
    image_of,
    caption_of,
    title: str,
    path: str | Path,
) -> Path:
    """The gallery PNG: ``image_of(row)`` / ``caption_of(row)`` give the view's image and caption text."""
    k = max([len(r.hits) for r in by_text + by_image] or [1])
    width = LABEL_W + max((k + 1) * CELL, (k + 1) * TEXT_CELL_W) + 10
    height = HEADER_H + 2 * 28 + (len(by_text) + len(by_image)) * ROW_H
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    wrapped(draw, (10, 8), title, width // 8, 2, size=15)
    y = HEADER_H
    draw.text(
        (10, y + 4),
        f"caption -> top-{k} images (green: right; orange: the right one and its rank)",
        fill=INK,
        font=font(15),
    )
    y += 28
    for result in by_text:
        wrapped(draw, (10, y + 8), caption_of(result.query), 30, 6)
        for column, hit in enumerate(result.hits):
            x = LABEL_W + column * CELL
            framed(canvas, image_of(hit.row), (x, y), GREEN if hit.correct else GREY)
            draw.text((x + 6, y + THUMB + 9), f"{hit.score:.2f}", fill=INK, font=font(12))
        if not any(hit.correct for hit in result.hits):
            x = LABEL_W + len(result.hits) * CELL + 8
            framed(canvas, image_of(result.answer), (x, y), ORANGE)
            draw.text((x + 6, y + THUMB + 9), f"right: #{result.rank}", fill=ORANGE, font=font(12))
        y += ROW_H
    draw.text((10, y + 4), f"image -> top-{k} captions", fill=INK, font=font(15))
    y += 28
    for result in by_image:
        framed(canvas, image_of(result.query), (10, y), INK)
        for column, hit in enumerate(result.hits):
            x = LABEL_W + column * TEXT_CELL_W
            _caption_cell(draw, (x, y), f"{hit.score:.2f}  {caption_of(hit.row)}", GREEN if hit.correct else GREY)
        if not any(hit.correct for hit in result.hits):
            x = LABEL_W + len(result.hits) * TEXT_CELL_W + 8
            _caption_cell(draw, (x, y), f"right: #{result.rank}  {caption_of(result.answer)}", ORANGE)
        y += ROW_H
    return save_png(canvas, path)


def _caption_cell(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, colour) -> None:
    x, y = xy
    draw.rectangle([x + 1, y + 1, x + TEXT_CELL_W - 6, y + THUMB + 6], outline=colour, width=3)
    wrapped(draw, (x + 7, y + 7), text, 19, 6, size=12)


def contact_sheet(images: list[Image.Image], labels: list[str], path: str | Path, title: str, columns: int = 5) -> Path:
    """Search results as a grid: each image with its label (rank, score, id) below, in rank order."""
    rows = max(1, -(-len(images) // columns))
    canvas = Image.new("RGB", (columns * CELL + 20, HEADER_H + rows * (CELL + 34)), "white")
    draw = ImageDraw.Draw(canvas)
    wrapped(draw, (10, 8), title, columns * CELL // 8, 2, size=15)
    for index, (image, label) in enumerate(zip(images, labels)):
        x, y = 10 + (index % columns) * CELL, HEADER_H + (index // columns) * (CELL + 34)
        framed(canvas, image, (x, y), GREY)
        wrapped(draw, (x + 4, y + THUMB + 9), label, 16, 3, size=11)
    return save_png(canvas, path)


def side_by_side(paths: list[Path], labels: list[str], out: str | Path) -> Path:
    """Several PNGs (the runs' galleries) in one row, each under its label."""
    images = [Image.open(p).convert("RGB") for p in paths]
    width, height = sum(i.width for i in images) + 10 * (len(images) + 1), max(i.height for i in images) + 40
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 10
    for image, label in zip(images, labels):
        draw.text((x, 10), label, fill=INK, font=font(18))
        canvas.paste(image, (x, 40))
        x += image.width + 10
    return save_png(canvas, out)


def save_png(canvas: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path
