"""``AlignedModel``: the trained alignment layers as a CLIP-like model over frozen embeddings.

``encode_image`` / ``encode_text`` map frozen-encoder embeddings into the L2-normalised
joint space. ``save(dir)`` writes ``model.safetensors`` (heads, SigLIP scale/bias and the
input preprocessing), ``model.json`` (architecture, config, training history, and the
``provenance`` its trainer records: frozen encoders and data) and, when
known, ``teacher.safetensors``; ``AlignedModel.load(dir)`` rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.heads import LinearHead, build_head
from sotalign.io import atomic_path
from sotalign.losses import SigLIPLoss
from sotalign.preprocess import Preprocessing
from sotalign.teachers import Teacher

FORMAT = "sotalign-model/1"


class AlignedModel(nn.Module):
    def __init__(
        self,
        spec: dict[str, Any],
        image_prep: Preprocessing,
        text_prep: Preprocessing,
        config: AlignConfig,
        teacher: Teacher | None = None,
    ):
        super().__init__()
        self.spec = dict(spec)  # architecture: image_dim, text_dim, head, head_dim, mlp_hidden, bias
        self.config = config
        self.teacher = teacher
        self.history: list[dict[str, float]] = []
        self.provenance: dict[str, str | None] = {}  # encoders and data it was trained on, set by the caller that knows
        self.image_prep, self.text_prep = image_prep, text_prep
        relative = {"top_k": config.asif_k, "power": config.asif_p}
        self.image_head = build_head(
            spec["head"], spec["image_dim"], spec["head_dim"], spec["mlp_hidden"], spec["bias"], **relative
        )
        self.text_head = build_head(
            spec["head"], spec["text_dim"], spec["head_dim"], spec["mlp_hidden"], spec["bias"], **relative
        )
        self.siglip = SigLIPLoss(config.siglip_init_scale, config.siglip_init_bias)

    @classmethod
    def from_teacher(cls, teacher: Teacher, config: AlignConfig, weights: torch.Tensor | None = None) -> AlignedModel:
        """The teacher itself as a model (what ``steps=0`` returns); ``weights`` scale its d'
        directions (CSA's correlation weighting)."""
        spec = {
            "image_dim": teacher.image_projection.shape[0],
            "text_dim": teacher.text_projection.shape[0],
            "head": "linear",
            "head_dim": teacher.dim,
            "mlp_hidden": None,
            "bias": False,
        }
        model = cls(spec, teacher.image_prep, teacher.text_prep, config, teacher)
        heads: tuple[LinearHead, LinearHead] = (model.image_head, model.text_head)
        with torch.no_grad():
            for head, projection in zip(heads, (teacher.image_projection, teacher.text_projection)):
                head.linear.weight.copy_((projection if weights is None else projection * weights.to(projection)).T)
        return model

    @property
    def device(self) -> torch.device:
        return self.image_prep.mean.device

    def encode_image(self, emb) -> torch.Tensor:
        x = torch.as_tensor(emb, device=self.device, dtype=torch.float32)
        return F.normalize(self.image_head(self.image_prep(x)), dim=-1)

    def encode_text(self, emb) -> torch.Tensor:
        y = torch.as_tensor(emb, device=self.device, dtype=torch.float32)
        return F.normalize(self.text_head(self.text_prep(y)), dim=-1)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        if self.teacher is not None:
            self.teacher.save(directory / "teacher.safetensors")
        meta = {
            "format": FORMAT,
            "spec": self.spec,
            "normalize": [self.image_prep.normalize, self.text_prep.normalize],
            "config": self.config.to_dict(),
            "history": self.history,
            "provenance": self.provenance,
        }
        with atomic_path(directory / "model.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> AlignedModel:
        directory = Path(directory)
        meta_path = directory / "model.json"
        if not meta_path.is_file():
            raise InputError(f"{directory} holds no saved model (missing model.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise InputError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        spec, (norm_img, norm_txt) = meta["spec"], meta["normalize"]
        teacher_path = directory / "teacher.safetensors"
        teacher = Teacher.load(teacher_path) if teacher_path.is_file() else None
        model = cls(
            spec,
            Preprocessing(spec["image_dim"], norm_img),
            Preprocessing(spec["text_dim"], norm_txt),
            AlignConfig.from_dict(meta["config"]),
            teacher,
        )
        try:
            state = load_file(str(directory / "model.safetensors"))
        except Exception as error:  # missing or broken weights file
            raise InputError(f"{directory / 'model.safetensors'} is not a readable safetensors file: {error}") from None
        model.load_state_dict(state)
        model.history = meta.get("history", [])
        model.provenance = meta.get("provenance", {})
        return model.to(map_location).eval()
