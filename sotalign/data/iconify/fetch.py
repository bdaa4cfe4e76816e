"""Iconify icon sets from npm: ``npm pack @iconify-json/<set>`` once, the tarball cached.

An ``@iconify-json/<set>`` package holds the set's icons as SVG bodies in ``icons.json``
(with aliases), its licence and author in ``info.json`` and, for emoji sets, the code point
sequence of each icon in ``chars.json``. We run the npm client (the machine's registry
settings, no address of ours) in a temporary folder of the cache and keep the packed tarball
as ``<cache>/<set>@<version>.tgz``; later loads read it without npm or the network. The sets
the bundled datasets use are pinned to the versions we measured, so that every machine builds
the same images, captions and splits; any other set is packed at its latest version once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sotalign.checks import InputError

SET_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # Iconify prefixes: lowercase words joined by hyphens
PINNED_VERSIONS = {  # packed and measured on 2026-11-30 (README, "Iconify icon sets")
    "twemoji": "1.2.5",
    "noto": "1.2.9",
    "noto-v1": "1.2.5",
    "fluent-emoji": "1.2.7",
    "fluent-emoji-flat": "1.2.6",
    "fluent-emoji-high-contrast": "1.2.6",
    "emojione": "1.2.3",
    "emojione-v1": "1.2.3",
    "openmoji": "1.2.29",
    "fxemoji": "1.2.2",
    "streamline-emojis": "1.2.4",
    "mdi": "1.2.3",
    "material-symbols": "1.2.98",
    "tabler": "1.2.41",
    "ph": "1.2.2",
    "lucide": "1.2.137",
    "carbon": "1.2.29",
}
NPM_TIMEOUT_S = 600  # the largest set (fluent-emoji, 14 MB) packs in about 5 s here


@dataclass(frozen=True)
class IconSet:
    """What the datasets read from one package: icons, aliases, the set's defaults, licence, characters.

    ``icons`` maps a name to its entry (``body`` plus optional ``width``, ``height``, ``left``,
    ``top``, ``hidden``); ``aliases`` maps a name to ``{"parent": name}`` plus optional
    transformations; ``chars`` maps a code point sequence (``"1f34e"``) to an icon name.
    """

    prefix: str
    version: str
    icons: dict[str, dict[str, Any]]
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    chars: dict[str, str] = field(default_factory=dict)
    width: float = 16  # Iconify's default icon box (icons.json may override it per set and per icon)
    height: float = 16
    left: float = 0
    top: float = 0

    @property
    def licence(self) -> str:
        return self.info.get("license", {}).get("spdx") or self.info.get("license", {}).get("title", "unknown")

    @property
    def author(self) -> str:
        return self.info.get("author", {}).get("name", "unknown")


def check_set_name(prefix: str) -> None:
    if not isinstance(prefix, str) or not SET_NAME.fullmatch(prefix):
        raise InputError(
            f"bad Iconify icon set name {prefix!r}: expected lowercase letters, digits and hyphens (e.g. twemoji)"
        )


def pack_set(prefix: str, cache: str | Path) -> Path:
    """The cached tarball of ``@iconify-json/<prefix>``, packed with npm if it is not there yet."""
    check_set_name(prefix)
    cache = Path(cache)
    wanted = PINNED_VERSIONS.get(prefix, "latest")
    tarball = cache / f"{prefix}@{wanted}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise InputError(
            f"the Iconify set {prefix!r} is not cached in {cache} and npm (Node.js's package manager) "
            "is not on PATH: install Node.js and npm to fetch it"
        )
    cache.mkdir(parents=True, exist_ok=True)
    spec = f"@iconify-json/{prefix}@{wanted}"
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache) as tmp:
        done = subprocess.run(
            [npm, "pack", spec, "--pack-destination", tmp, "--json"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        if done.returncode != 0:
            if "E404" in done.stderr or "ETARGET" in done.stderr:
                raise InputError(
                    f"unknown Iconify icon set {prefix!r}: npm has no package {spec} "
                    "(the sets are listed at https://icon-sets.iconify.design)"
                )
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"`npm pack {spec}` failed with exit code {done.returncode}: {' / '.join(lines[:3])}")
        packed = Path(tmp) / json.loads(done.stdout)[0]["filename"]
        os.replace(packed, tarball)  # same folder tree: atomic, a concurrent loader sees all of it or nothing
    return tarball


def _member(archive: tarfile.TarFile, name: str, source: Path) -> Any:
    try:
        member = archive.extractfile(f"package/{name}")
    except KeyError:
        member = None
    if member is None:
        raise InputError(f"{source} is not an @iconify-json package: it has no package/{name}; delete it and rerun")
    return json.load(member)


def read_set(tarball: str | Path) -> IconSet:
    """Parse a packed ``@iconify-json`` tarball (read in place, nothing extracted to disk)."""
    tarball = Path(tarball)
    with tarfile.open(tarball) as archive:
        icons = _member(archive, "icons.json", tarball)
        info = _member(archive, "info.json", tarball)
        package = _member(archive, "package.json", tarball)
        names = set(archive.getnames())
        chars = _member(archive, "chars.json", tarball) if "package/chars.json" in names else {}
    defaults = {key: icons[key] for key in ("width", "height", "left", "top") if key in icons}
    return IconSet(
        prefix=icons["prefix"],
        version=package.get("version", "unknown"),
        icons=icons["icons"],
        aliases=icons.get("aliases", {}),
        info=info,
        chars=chars,
        **defaults,
    )


def load_set(prefix: str, cache: str | Path) -> IconSet:
    """The icon set ``prefix`` (packed with npm into ``cache`` on first use)."""
    return read_set(pack_set(prefix, cache))
