"""From icon names to concepts and captions.

Iconify names describe their icons ("red-apple", "airplane-takeoff"), and the emoji sets share
CLDR-style names across drawing styles, so a *concept* (what a caption describes) is a name,
and one concept has images in several styles. The rules, each measured on the pinned sets:

- Left out: hidden icons (kept by Iconify for old names only), skin-tone variants ("...-dark-skin-tone",
  and fluent-emoji's BASE-light ... BASE-dark where all five exist; as the openmoji benchmark:
  they repeat their base with a colour change), and meaningless names: no letter at all ("2",
  "123", noto's "0"-"9") or a generic shape with a number ("shape-2").
- Rewritten: "flag-for-japan" and "flag-for-flag-japan" (emojione, noto-v1) are "flag-japan".
- Style suffixes: the monochrome sets name their styles (material-symbols' -outline, -rounded,
  -sharp; mdi's -outline; ph's -thin, -light, -bold, -fill, -duotone; tabler's and carbon's
  -filled). BASE-SUFFIX is BASE in that style when BASE is a name of the same set
  ("ph:airplane-bold" is "airplane" in ph's bold style); emoji names keep their suffixes
  ("police-car-light" is the police car's light, not a light style).
- Numbered drawings: streamline-emojis numbers alternative drawings ("baby-1", "baby-2", some in another skin tone) of one
  emoji; its BASE-N is BASE. Other sets' numbers carry meaning ("battery-50"), so only there.
- Run-together names: fxemoji writes "admissiontickets"; its icons are kept only where the name
  matches a name of another loaded set with the hyphens removed ("admission-tickets").
- Synonyms join one concept: a plain alias and its icon ("bear-face" -> "bear"), and icons of
  different sets with the same code points in ``chars.json`` (fluent's "person-elf" is everyone
  else's "elf"), unless a set draws both names as separate icons (``Synonyms``). The concept's
  name is the name most images use; all of its names are its captions, hyphens read as spaces.
  An alias that flips or rotates its parent shows another image, so its name is not a caption.
- One drawing under several names of a set (emojione draws France's flag for "flag-for-st-martin"
  too) is one image, kept under the name the most sets use.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

SKIN_TONE = re.compile(r"(?:^|-)(?:light|medium-light|medium|medium-dark|dark)-skin-tone(?:-|$)")
TONES = ("light", "medium-light", "medium", "medium-dark", "dark")  # fluent-emoji's skin-tone suffixes
STYLE_SUFFIXES = {  # per set, longest first: its own style variants (an emoji's "police-car-light" is a concept)
    "material-symbols": ("outline-rounded", "outline-sharp", "outline", "rounded", "sharp"),
    "mdi": ("outline",),
    "ph": ("duotone", "light", "bold", "fill", "thin"),
    "tabler": ("filled",),
    "carbon": ("filled",),
}
NUMBERED_DRAWINGS = frozenset({"streamline-emojis"})  # sets whose BASE-N are drawings of BASE
RUN_TOGETHER = frozenset({"fxemoji"})  # sets whose names run their words together
REWRITES = ((re.compile(r"^flag-for-(?:flag-)?"), "flag-"),)
GENERIC_SHAPE = re.compile(r"(?:shapes?|polygon|blob|abstract|pattern)-\d+")


def caption(name: str) -> str:
    """The caption a name gives: hyphens read as spaces ("red-apple" -> "red apple")."""
    return name.replace("-", " ")


def meaningless(name: str) -> bool:
    """A name that says nothing a caption could use: no letter, or a generic shape and a number."""
    return not re.search(r"[a-z]", name) or GENERIC_SHAPE.fullmatch(name) is not None


def is_skin_tone(name: str, names: set[str]) -> bool:
    if SKIN_TONE.search(name):
        return True
    for tone in TONES:
        if name.endswith(f"-{tone}"):
            base = name[: -len(tone) - 1]
            if all(f"{base}-{t}" in names for t in TONES):
                return True
    return False


def parse_name(name: str, names: set[str], prefix: str) -> tuple[str, str] | None:
    """(concept name, style suffix or "") of icon or alias ``name`` of set ``prefix``; None = left out.

    ``names`` holds every icon and alias name of the set (a style suffix only counts when its
    base is a name of its own).
    """
    if is_skin_tone(name, names):
        return None
    for pattern, replacement in REWRITES:
        name = pattern.sub(replacement, name)
    style = ""
    for suffix in STYLE_SUFFIXES.get(prefix, ()):
        if name.endswith(f"-{suffix}") and name[: -len(suffix) - 1] in names:
            name, style = name[: -len(suffix) - 1], suffix
            break
    if prefix in NUMBERED_DRAWINGS:
        name = re.sub(r"-\d+$", "", name)
    return None if meaningless(name) else (name, style)


def unsquash(names: Iterable[str], known: set[str]) -> dict[str, str]:
    """Run-together names that match a ``known`` name with its hyphens removed -> that name."""
    squashed: dict[str, str] = {}
    for k in sorted(known):
        squashed.setdefault(k.replace("-", ""), k)
    return {n: n if n in known else squashed[n] for n in names if n in known or n in squashed}


class Synonyms:
    """Union-find over names with the sets that draw each: names joined by ``link`` are one concept.

    A link is refused when one set draws both sides as separate icons: that set tells them
    apart, so a synonym (an alias, a shared code point) in another set must not merge them.
    Without this rule, an old set whose "woman-with-bunny-ears" is an alias of
    "people-with-bunny-ears" would merge the two concepts in every set that draws both.
    """

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.drawn_by: dict[str, set[str]] = {}  # root -> sets with an image of the concept

    def find(self, name: str) -> str:
        root = self.parent.setdefault(name, name)
        while root != self.parent[root]:
            root = self.parent[root]
        while name != root:  # path compression
            self.parent[name], name = root, self.parent[name]
        return root

    def add_drawn(self, name: str, prefix: str) -> None:
        """Set ``prefix`` draws an icon named (parsed to) ``name``."""
        self.drawn_by.setdefault(self.find(name), set()).add(prefix)

    def link(self, a: str, b: str) -> bool:
        """Join the concepts of ``a`` and ``b`` unless one set draws both; True if they are one now."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        sets_a, sets_b = self.drawn_by.get(ra, set()), self.drawn_by.get(rb, set())
        if sets_a & sets_b:
            return False
        self.parent[ra] = rb
        self.drawn_by[rb] = sets_a | sets_b
        self.drawn_by.pop(ra, None)
        return True

    def concepts(self, image_names: Iterable[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
        """(name -> concept name, concept name -> its names, concept name first).

        ``image_names`` has one entry per image (the concept name it was parsed to): the name
        most images use names the concept; ties go to the shorter, then the alphabetically first.
        """
        uses = Counter(image_names)
        groups: dict[str, list[str]] = {}
        for name in sorted(self.parent):
            groups.setdefault(self.find(name), []).append(name)
        canonical, members = {}, {}
        for names in groups.values():
            names.sort(key=lambda n: (-uses[n], len(n), n))
            members[names[0]] = names
            for n in names:
                canonical[n] = names[0]
        return canonical, members


def captions_of(names: list[str]) -> list[str]:
    """The captions of a concept's names, in order, without case-insensitive repeats."""
    seen: set[str] = set()
    out = []
    for name in names:
        text = caption(name)
        if text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out
