"""Semi-supervised SAIL (paper 4): SigLIP on the pairs with the unpaired images and texts of the
step as extra negatives. Rows are [paired; unpaired] images, columns [paired; unpaired]
texts; only the pairs' diagonal is positive, so an unpaired sample is pushed away from every
text or image, which is all that SigLIP can do with data that has no partner."""

from __future__ import annotations

import torch

from sotalign.losses import Terms
from sotalign.objectives import Batch, Objective


class SemiSAILObjective(Objective):
    def __call__(self, batch: Batch) -> tuple[torch.Tensor, Terms]:
        images, texts = batch.paired()
        extra_images = batch.images(batch.inputs.unpaired_images, batch.rows.images)
        extra_texts = batch.texts(batch.inputs.unpaired_texts, batch.rows.texts)
        terms = batch.siglip(torch.cat([images, extra_images]) @ torch.cat([texts, extra_texts]).T, positives=images.shape[0])
        return terms["siglip"], terms
