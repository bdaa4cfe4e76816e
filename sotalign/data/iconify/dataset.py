"""The ``iconify-*`` retrieval datasets: icons of several sets as images of shared concepts.

``iconify-emoji`` holds the emoji sets (one concept, such as "red apple", drawn in up to eleven
styles), ``iconify-mono`` the monochrome icon sets (a shifted source of unpaired images and
captions), and ``iconify:SET[,SET...]`` any selection (named ``iconify-SET+SET``). Images are
``<set>:<name>`` with the columns ``set``, ``style`` (the set, plus a style suffix such as
``ph-bold``) and ``licence``; captions (``names.py``) belong to concepts, and each image carries
its concept, so that retrieval can count any image of a caption's concept as a hit.

Concepts, not images, are split: a stable hash of the concept name puts it in ``test``,
``validation`` or ``pool`` with fixed probabilities, so no test concept is seen in any style
during training, and a concept name falls on the same side in every selection of sets (an
``iconify-mono:pool`` table never holds a concept that ``iconify-emoji`` tests under the same
name; synonyms are per dataset, so a shared caption under another concept name can: README).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sotalign.checks import InputError
from sotalign.data.datasets import ImageTextDataset
from sotalign.data.iconify.fetch import IconSet, check_set_name, load_set
from sotalign.data.iconify.names import RUN_TOGETHER, Synonyms, captions_of, parse_name, unsquash
from sotalign.data.iconify.render import render_icon

EMOJI_SETS = (
    "twemoji",
    "noto",
    "noto-v1",
    "fluent-emoji",
    "fluent-emoji-flat",
    "fluent-emoji-high-contrast",
    "emojione",
    "emojione-v1",
    "openmoji",
    "fxemoji",
    "streamline-emojis",
)  # the emoji styles
MONO_SETS = ("mdi", "material-symbols", "tabler", "ph", "lucide", "carbon")  # the monochrome sets
DATASETS = {"iconify-emoji": EMOJI_SETS, "iconify-mono": MONO_SETS}
TEST_FRACTION = 0.15  # our choice: ~400 test concepts of the emoji sets, as many as openmoji's 400 test items
VALIDATION_FRACTION = 0.05  # our choice: ~130 concepts (~700 images) for model selection


@dataclass(frozen=True)
class IconImage:
    icon_set: IconSet
    name: str  # the icon's own name in its set
    concept: str
    style: str  # the set, or the set and a style suffix ("ph-bold")


def resolve(name: str) -> tuple[str, tuple[str, ...]]:
    """(dataset name, icon sets) of ``iconify-emoji``, ``iconify-mono`` or ``iconify:SET[,SET...]``."""
    if name in DATASETS:
        return name, DATASETS[name]
    if not name.startswith("iconify:"):
        raise InputError(f"unknown Iconify dataset {name!r}: expected {', '.join(DATASETS)} or iconify:SET[,SET...]")
    sets = tuple(s.strip() for s in name.removeprefix("iconify:").split(","))
    for prefix in sets:
        check_set_name(prefix)
    if len(set(sets)) != len(sets):
        raise InputError(f"{name!r} names an icon set twice")
    return "iconify-" + "+".join(sets), sets


def concept_split(concept: str) -> str:
    """``test``, ``validation`` or ``pool``: a function of the concept's name alone."""
    u = int(hashlib.sha1(f"iconify/{concept}".encode()).hexdigest()[:15], 16) / 16**15
    return "test" if u < TEST_FRACTION else "validation" if u < TEST_FRACTION + VALIDATION_FRACTION else "pool"


def _parse_sets(sets: Sequence[IconSet]) -> list[dict[str, tuple[str, str] | None]]:
    """Per set: every icon and alias name -> (concept name, style suffix), None = left out."""
    parsed = []
    for icon_set in sets:
        names = set(icon_set.icons) | set(icon_set.aliases)
        parsed.append({n: parse_name(n, names, icon_set.prefix) for n in sorted(names)})
    known = {p[0] for s, names in zip(sets, parsed) if s.prefix not in RUN_TOGETHER for p in names.values() if p}
    for s, names in zip(sets, parsed):
        if s.prefix in RUN_TOGETHER:
            mapped = unsquash([p[0] for p in names.values() if p], known)
            for n, p in names.items():
                names[n] = (mapped[p[0]], p[1]) if p and p[0] in mapped else None
    return parsed


def _alias_target(icon_set: IconSet, alias: str) -> str | None:
    """The icon a plain alias names (following alias chains); None for a transformed or broken alias."""
    seen = set()
    while alias in icon_set.aliases and alias not in seen:
        seen.add(alias)
        entry = icon_set.aliases[alias]
        if set(entry) != {"parent"}:
            return None
        alias = entry["parent"]
    return alias if alias in icon_set.icons else None


def _drawing(icon_set: IconSet, name: str) -> tuple:
    entry = icon_set.icons[name]
    return (entry["body"],) + tuple(entry.get(k, getattr(icon_set, k)) for k in ("left", "top", "width", "height"))


def collect_images(sets: Sequence[IconSet]) -> tuple[list[IconImage], dict[str, list[str]]]:
    """Every kept icon of ``sets`` with its concept (set order, then name order), and each concept's captions."""
    parsed_sets = _parse_sets(sets)
    drawn = [
        [n for n in sorted(s.icons) if not s.icons[n].get("hidden") and parsed[n] is not None]
        for s, parsed in zip(sets, parsed_sets)
    ]
    spread = Counter(concept for parsed, names in zip(parsed_sets, drawn) for concept in {parsed[n][0] for n in names})
    synonyms, kept = Synonyms(), []
    for icon_set, parsed, names in zip(sets, parsed_sets, drawn):
        by_drawing: dict[tuple, list[str]] = {}
        for name in names:
            synonyms.add_drawn(parsed[name][0], icon_set.prefix)
            by_drawing.setdefault(_drawing(icon_set, name), []).append(name)
        # one drawing under several names is one image, named as the most sets name it
        chosen = sorted(min(same, key=lambda n: (-spread[parsed[n][0]], n)) for same in by_drawing.values())
        kept += [(icon_set, name, *parsed[name]) for name in chosen]
    by_sequence: dict[str, list[str]] = {}
    for icon_set, parsed, names in zip(sets, parsed_sets, drawn):  # links once every set's drawings are known
        visible = set(names)
        for alias in sorted(icon_set.aliases):
            target = _alias_target(icon_set, alias)
            if target in visible and parsed[alias] is not None:
                synonyms.link(parsed[alias][0], parsed[target][0])
        for sequence, name in sorted(icon_set.chars.items()):
            if name in visible:
                key = "-".join(c for c in sequence.lower().split("-") if c != "fe0f")
                by_sequence.setdefault(key, []).append(parsed[name][0])
    for names in by_sequence.values():
        for other in names[1:]:
            synonyms.link(other, names[0])
    canonical, members = synonyms.concepts(concept for _, _, concept, _ in kept)
    images = [
        IconImage(s, name, canonical[concept], s.prefix + (f"-{style}" if style else ""))
        for s, name, concept, style in kept
    ]
    return images, {concept: captions_of(members[concept]) for concept in dict.fromkeys(i.concept for i in images)}


def build_dataset(name: str, sets: Sequence[IconSet]) -> ImageTextDataset:
    """The retrieval dataset of ``sets`` (already loaded) under ``name``.

    Captions belong to concepts: each is stored with the concept's first image as its owner
    (``caption_image``) and ``image_concept`` says which images share it.
    """
    images, captions = collect_images(sets)
    if not images:
        raise InputError(f"the icon sets {', '.join(s.prefix for s in sets)} leave no icon with a usable name")
    first: dict[str, int] = {}
    for i, image in enumerate(images):
        first.setdefault(image.concept, i)
    texts, owner = [], []
    for concept, index in first.items():
        texts += captions[concept]
        owner += [index] * len(captions[concept])
    split_of = np.asarray([concept_split(i.concept) for i in images])
    splits = {s: np.flatnonzero(split_of == s) for s in ("test", "validation", "pool") if (split_of == s).any()}
    return ImageTextDataset(
        name=name,
        image_ids=[f"{i.icon_set.prefix}:{i.name}" for i in images],
        captions=texts,
        caption_image=np.asarray(owner),
        splits=splits,
        load_image=lambda k: render_icon(images[k].icon_set, images[k].name),
        image_concept=np.asarray([i.concept for i in images]),
        image_columns={
            "set": np.asarray([i.icon_set.prefix for i in images]),
            "style": np.asarray([i.style for i in images]),
            "licence": np.asarray([i.icon_set.licence for i in images]),
        },
    )


def load_iconify(name: str, cache: str | Path) -> ImageTextDataset:
    """Dataset ``name`` (see ``resolve``), its sets packed with npm into ``cache`` on first use."""
    dataset, prefixes = resolve(name)
    return build_dataset(dataset, [load_set(prefix, cache) for prefix in prefixes])
