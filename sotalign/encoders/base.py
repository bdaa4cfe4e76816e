"""The frozen-encoder interface and the spec syntax.

A spec is ``kind:name`` plus optional ``?key=value&key=value`` options, e.g.
``timm:vit_large_patch16_dinov3?pooling=cls+mean_patch&pretrained_file=/weights/dinov3.safetensors``
or ``hf:/models/nv-embed-v2?pooling=mean&max_length=128``. Keyword arguments to
``load_encoder`` override spec options. An encoder's ``id`` is the canonical spec with every
option that changes its output (pooling, weights, resolution, length, effective precision:
fp16/bf16 on GPU, fp32 on CPU), so that the embedding store can refuse to mix encoders.
"""

from __future__ import annotations

import abc

import torch

from sotalign.checks import InputError


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"kind:name?a=1&b=2"`` -> ``("kind", "name", {"a": "1", "b": "2"})``."""
    head, _, query = spec.partition("?")
    kind, sep, name = head.partition(":")
    if not sep or not kind or not name:
        raise InputError(
            f"encoder spec {spec!r} must look like 'kind:name[?option=value&...]' (kinds: timm, hf, packaged)"
        )
    options = {}
    for item in filter(None, query.split("&")):  # literal: 'cls+mean_patch' keeps its '+'
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"encoder option {item!r} in {spec!r} must be key=value")
        options[key] = value
    return kind, name, options


def canonical_id(kind: str, name: str, options: dict) -> str:
    query = "&".join(f"{k}={v}" for k, v in sorted(options.items()) if v is not None)
    return f"{kind}:{name}" + (f"?{query}" if query else "")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16/bf16 autocast on GPU only; CPU always runs float32."""
    table = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise InputError(f"unknown precision {precision!r}; expected one of fp32, fp16, bf16")
    return table[precision] if device.type == "cuda" else None


class Encoder(abc.ABC):
    """A frozen encoder: ``embed(batch)`` maps a list of PIL images or strings to (B, dim) float32.

    Each kind also has a static ``make_id`` taking its constructor's arguments, which gives the
    ``id`` without building the encoder (``sotalign.encoders.encoder_id``).
    """

    modality: str  # "image" or "text"
    dim: int
    id: str
    device: torch.device

    @abc.abstractmethod
    def embed(self, batch: list) -> torch.Tensor: ...
