"""Checked dataclass fields: the one home of config validation.

A field declares its own checks where it is defined (``option(0.05, above=0)``,
``option("cca", choices=TEACHER_KINDS)``), so a new field cannot be left unchecked by a
forgotten line elsewhere. ``check_fields`` coerces every field to its annotation (YAML reads
``1e-3`` as a string) and runs those checks; ``from_mapping`` builds a dataclass from a mapping
and names any unknown key. ``AlignConfig``, the experiment's ``DataSpec`` and ``Experiment``, and
the orchestrator's ``RunOptions`` all use them; every failure is an ``InputError`` naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

from sotalign.checks import InputError, check_choice

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    *,
    choices: Iterable[str] | None = None,
    label: str | None = None,
    above: float | None = None,
    minimum: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its checks: one of ``choices`` (named ``label`` in errors), ``> above``,
    ``>= minimum``. None passes the range checks where the annotation allows it."""
    metadata = {
        "choices": tuple(choices) if choices is not None else None,
        "label": label,
        "above": above,
        "minimum": minimum,
    }
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={k: v for k, v in metadata.items() if v is not None}
    )


def coerce(name: str, value: Any, annotation: str) -> Any:
    """``value`` checked against a field annotation ("float", "int | None", ...), accepting numeric
    strings; an ``InputError`` naming the field otherwise."""
    if value is None:
        if "None" in annotation:
            return None
        raise InputError(f"{name} must not be None")
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind == "str":
            if isinstance(value, str):
                return value
        elif kind == "int" and not isinstance(value, bool):
            number = float(value)
            if number.is_integer():
                return int(number)
        elif kind == "float" and not isinstance(value, bool):
            return float(value)
        else:  # a nested dataclass or another type: checked by its own class
            return value
    except (TypeError, ValueError):  # float() of a non-numeric string
        pass
    raise InputError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")


def check_fields(instance: Any, prefix: str = "") -> None:
    """Coerce every field of ``instance`` in place and run its declared checks (``option``)."""
    for f in dataclasses.fields(instance):
        name = prefix + f.name
        value = coerce(name, getattr(instance, f.name), str(f.type))
        setattr(instance, f.name, value)
        if value is None:
            continue
        checks = f.metadata
        if "choices" in checks:
            check_choice(value, checks["choices"], checks.get("label", name))
        or_none = " (or None)" if "None" in str(f.type) else ""
        if "above" in checks and not value > checks["above"]:
            raise InputError(f"{name} must be > {checks['above']}{or_none}, got {value}")
        if "minimum" in checks and not value >= checks["minimum"]:
            raise InputError(f"{name} must be >= {checks['minimum']}{or_none}, got {value}")


def from_mapping(cls: type[T], values: dict[str, Any] | None, what: str) -> T:
    """``cls(**values)``, naming every key of ``values`` that is not a field (``what``: "run", "data", ...)."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise InputError(f"{what} must be a mapping of keys, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown {what} key(s): {', '.join(unknown)}; expected {', '.join(known)}")
    return cls(**values)
