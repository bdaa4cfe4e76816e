"""``hf:<model-or-path>`` text encoders through transformers.

Pooling: ``mean`` over non-padding tokens (the paper's), ``cls`` (first token), ``last_token``
(last non-padding token, for decoder embedders). Local directories load without any hub access.
"""

from __future__ import annotations

import torch

from sotalign.checks import InputError
from sotalign.device import resolve_device
from sotalign.encoders.base import Encoder, autocast_dtype, canonical_id

POOLINGS = ("mean", "cls", "last_token")


class HFTextEncoder(Encoder):
    modality = "text"

    def __init__(
        self,
        name: str,
        pooling: str = "mean",  # paper 3.6: "averaging all tokens"
        max_length: int = 77,  # CLIP's text context; captions are shorter
        device: str | None = None,
        precision: str = "fp16",  # GPU only; CPU runs float32
        spec_name: str | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r} for hf:{name}; expected one of {', '.join(POOLINGS)}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModel.from_pretrained(name)
        except OSError as error:
            raise InputError(
                f"transformers cannot load {name!r} (no hub access? use a local directory): {error}"
            ) from None
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.pooling, self.max_length = pooling, int(max_length)
        self.autocast = autocast_dtype(precision, self.device)
        self.dim = model.config.hidden_size
        self.id = self.make_id(name, pooling, max_length, device, precision, spec_name)

    @staticmethod
    def make_id(
        name: str, pooling: str, max_length: int, device: str | None, precision: str, spec_name: str | None
    ) -> str:
        """The id of the encoder the constructor builds from these arguments (no weights loaded)."""
        effective = precision if autocast_dtype(precision, resolve_device(device)) else "fp32"
        return canonical_id(
            "hf", spec_name or name, {"pooling": pooling, "max_length": int(max_length), "precision": effective}
        )

    @torch.inference_mode()
    def embed(self, batch: list) -> torch.Tensor:
        tokens = self.tokenizer(
            list(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].to(hidden.dtype)
        if self.pooling == "mean":
            out = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        elif self.pooling == "cls":
            out = hidden[:, 0]
        elif self.tokenizer.padding_side == "left":
            out = hidden[:, -1]
        else:  # last non-padding token under right padding
            last = tokens["attention_mask"].sum(1) - 1
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return out.float().cpu()
