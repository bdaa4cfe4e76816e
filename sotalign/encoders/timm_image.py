"""``timm:<model>`` image encoders, with timm's own pretrained config and transforms.

Pooling: ``cls`` (first token), ``mean_patch`` (mean of the patch tokens), ``cls+mean_patch``
(both concatenated: the paper's image feature, following SAIL), ``pooled`` (timm's head-less
pooled output, the only choice for CNNs). ``pretrained_file=`` loads local weights (no hub).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sotalign.checks import InputError
from sotalign.device import resolve_device
from sotalign.encoders.base import Encoder, autocast_dtype, canonical_id

TOKEN_POOLINGS = ("cls", "mean_patch", "cls+mean_patch")
POOLINGS = (*TOKEN_POOLINGS, "pooled")


class TimmImageEncoder(Encoder):
    modality = "image"

    def __init__(
        self,
        name: str,
        pooling: str = "cls+mean_patch",  # paper 3.6: [CLS] + mean of the patch tokens
        pretrained_file: str | None = None,
        pretrained: bool = True,
        device: str | None = None,
        precision: str = "fp16",  # GPU only; CPU runs float32
    ):
        import timm
        from timm.data import create_transform, resolve_data_config

        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r} for timm:{name}; expected one of {', '.join(POOLINGS)}")
        if pretrained_file and not Path(pretrained_file).is_file():
            raise InputError(f"pretrained_file {pretrained_file!r} does not exist")
        overlay = {"file": pretrained_file} if pretrained_file else None
        try:
            model = timm.create_model(
                name, pretrained=pretrained or bool(pretrained_file), num_classes=0, pretrained_cfg_overlay=overlay
            )
        except RuntimeError as error:  # timm's message for unknown models is a RuntimeError
            raise InputError(f"timm cannot build {name!r}: {error}") from None
        self.num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
        if pooling in TOKEN_POOLINGS and not self.num_prefix_tokens:
            raise InputError(f"timm:{name} has no [CLS]/prefix token; use pooling=pooled")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.pooling = pooling
        self.autocast = autocast_dtype(precision, self.device)
        self.transform = create_transform(**resolve_data_config({}, model=model))
        width = model.num_features
        self.dim = 2 * width if pooling == "cls+mean_patch" else width
        self.id = self.make_id(name, pooling, pretrained_file, pretrained, device, precision)

    @staticmethod
    def make_id(
        name: str, pooling: str, pretrained_file: str | None, pretrained: bool, device: str | None, precision: str
    ) -> str:
        """The id of the encoder the constructor builds from these arguments (no weights loaded)."""
        effective = precision if autocast_dtype(precision, resolve_device(device)) else "fp32"
        return canonical_id(
            "timm",
            name,
            {
                "pooling": pooling,
                "weights": pretrained_file or ("hub" if pretrained else "random"),
                "precision": effective,
            },
        )

    @torch.inference_mode()
    def embed(self, batch: list) -> torch.Tensor:
        x = torch.stack([self.transform(im.convert("RGB")) for im in batch]).to(self.device)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if self.pooling == "pooled":
                out = self.model(x)
            else:
                tokens = self.model.forward_features(x)
                cls, patches = tokens[:, 0], tokens[:, self.num_prefix_tokens :].mean(1)
                out = {"cls": cls, "mean_patch": patches, "cls+mean_patch": torch.cat([cls, patches], 1)}[self.pooling]
        return out.float().cpu()
