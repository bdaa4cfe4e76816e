"""``--set key=value`` overrides of an ``AlignConfig``; values are parsed as YAML scalars."""

from __future__ import annotations

import yaml

from sotalign.config import AlignConfig


def apply_overrides(config: AlignConfig, assignments: list[str]) -> AlignConfig:
    """Return ``config`` with each ``key=value`` applied, naming a malformed or unknown key."""
    changes = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            changes[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {key}: cannot parse value {raw!r} ({error.problem})") from None
    return AlignConfig.from_dict({**config.to_dict(), **changes})
