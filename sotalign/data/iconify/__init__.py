"""Iconify icon sets from npm as image-caption retrieval data (``iconify-emoji``, ``iconify-mono``).

``fetch``: ``npm pack`` the ``@iconify-json/<set>`` packages into a cache (under the store);
``render``: SVG bodies to 128 px images on white (resvg); ``names``: concepts and captions from
icon names; ``dataset``: the datasets ``sotalign embed`` reads, split by concept.
"""

from sotalign.data.iconify.dataset import DATASETS, EMOJI_SETS, MONO_SETS, build_dataset, concept_split, load_iconify
from sotalign.data.iconify.fetch import IconSet, load_set, pack_set, read_set
from sotalign.data.iconify.render import IMAGE_SIZE, render_icon

__all__ = [
    "DATASETS",
    "EMOJI_SETS",
    "IMAGE_SIZE",
    "MONO_SETS",
    "IconSet",
    "build_dataset",
    "concept_split",
    "load_iconify",
    "load_set",
    "pack_set",
    "read_set",
    "render_icon",
]
