"""``key=value`` overrides of an experiment tree (``--set`` and sampled sweep parameters).

A key is a dotted path into the experiment file (``data.n_pairs``, ``run.workers``, ``method``);
a bare name that is not a top-level key means an ``AlignConfig`` field (``alpha`` is
``align.alpha``), as in ``--set alpha=3``. Values given on the command line are parsed as YAML
scalars (``1e-3``, ``null``, ``false``).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from orchestrator.redaction import SECRET_NAME, remember_secret
from sotalign.checks import InputError

TOP_LEVEL = ("name", "method", "seed", "data", "align", "run")


def add_set_argument(parser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option of a subcommand (read back with ``parse_assignments``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def key_path(key: str) -> list[str]:
    """``"alpha"`` -> ``["align", "alpha"]``; ``"data.n_pairs"`` -> ``["data", "n_pairs"]``."""
    parts = key.strip().split(".")
    if not all(parts):
        raise InputError(f"malformed key {key!r}")
    if len(parts) == 1 and parts[0] not in TOP_LEVEL:
        return ["align", parts[0]]
    if parts[0] not in TOP_LEVEL or (len(parts) > 1 and parts[0] in ("name", "method", "seed")) or len(parts) > 2:
        raise InputError(
            f"unknown key {key!r}: use a top-level key ({', '.join(TOP_LEVEL)}), section.field, or an AlignConfig field"
        )
    return parts


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["alpha=3", "data.n_pairs=100"]`` -> ``{"alpha": 3, "data.n_pairs": 100}``, naming a malformed item."""
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if SECRET_NAME.search(key):  # a value given under a credential's name is hidden wherever it is shown
            remember_secret(raw.strip())
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, got {item!r}")
        try:
            changes[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise InputError(f"--set {key}: cannot parse value {raw!r} ({error.problem})") from None
    return changes


def with_changes(tree: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with every ``key: value`` of ``changes`` set (sections created as needed)."""
    tree = copy.deepcopy(tree)
    for key, value in changes.items():
        *sections, leaf = key_path(key)
        node = tree
        for section in sections:
            child = node.setdefault(section, {})
            if not isinstance(child, dict):
                raise InputError(f"cannot set {key!r}: {section!r} is not a section")
            node = child
        node[leaf] = value
    return tree
