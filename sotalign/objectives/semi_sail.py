"""Semi-supervised SAIL (paper 4): SigLIP on the pairs with the unpaired images and texts of the
step as extra negatives. Rows are [paired; unpaired] images, columns [paired; unpaired]
texts; only the pairs' diagonal (and pairs that share their caption) is positive, so an unpaired
sample is pushed away from every text or image, which is all that SigLIP can do with data that
has no partner."""

from __future__ import annotations

import torch

from sotalign.losses import Terms
from sotalign.objectives.base import Objective, Step


class SemiSAILObjective(Objective):
    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        images, texts = step.paired()
        extra_images = step.images(step.inputs.unpaired_images, step.rows.images)
        extra_texts = step.texts(step.inputs.unpaired_texts, step.rows.texts)
        terms = step.siglip(
            torch.cat([images, extra_images]) @ torch.cat([texts, extra_texts]).T,
            positives=images.shape[0],
            positive_mask=step.pair_positives(),
        )
        return terms["siglip"], terms
