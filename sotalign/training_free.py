"""Training-free references built from the pairs alone (paper 4, Table 6).

* ASIF (Norelli et al., NeurIPS 2023): an image is represented by its cosine similarities to
  the paired images (the anchors), a text by its similarities to the paired texts; both live
  in the same n_pairs-dimensional space because anchor i is one pair. Only the top k
  similarities are kept, raised to the power p.
* CSA (Li et al., ICLR 2025, "canonical similarity analysis"): ridge CCA on the pairs, then a
  similarity that weights each canonical direction by its correlation. We scale both CCA
  projections by sqrt(rho), so the cosine of the encodings is the rho-weighted inner product
  (normalised in the weighted space).
"""

from __future__ import annotations

import torch

from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.model import AlignedModel
from sotalign.preprocess import Preprocessing
from sotalign.teachers import Teacher


def asif_model(paired_images: torch.Tensor, paired_texts: torch.Tensor, config: AlignConfig) -> AlignedModel:
    """ASIF as an ``AlignedModel`` whose heads hold the (preprocessed) pairs as anchors."""
    center = config.center != "none"
    image_prep = Preprocessing.fit(paired_images.float(), config.normalize_inputs, center)
    text_prep = Preprocessing.fit(paired_texts.float(), config.normalize_inputs, center)
    spec = {
        "image_dim": paired_images.shape[1],
        "text_dim": paired_texts.shape[1],
        "head": "relative",
        "head_dim": paired_images.shape[0],
        "mlp_hidden": None,
        "bias": False,
    }
    model = AlignedModel(spec, image_prep, text_prep, config)
    with torch.no_grad():
        model.image_head.anchors.copy_(image_prep(paired_images.float()))
        model.text_head.anchors.copy_(text_prep(paired_texts.float()))
    return model


def csa_model(teacher: Teacher, config: AlignConfig) -> AlignedModel:
    """CSA as an ``AlignedModel``: the CCA teacher with correlation-weighted directions."""
    if teacher.kind != "cca" or teacher.correlations is None:
        raise InputError(f"CSA needs a CCA teacher with its canonical correlations, got a {teacher.kind} teacher")
    return AlignedModel.from_teacher(teacher, config, weights=teacher.correlations.clamp_min(0).sqrt())
