"""S-CLIP's caption-level pseudo-labels (Mo et al., NeurIPS 2023; paper 4), for both modalities.

An unpaired image gets a distribution over the step's paired captions: the row of the
entropic OT plan between the unpaired and the paired images (cost = -cosine, uniform
marginals), normalised (``soft``) or its argmax (``hard``). The image's prediction over
those captions, softmax(scale * cos), is trained towards it with cross-entropy;
symmetrically an unpaired text gets a distribution over the paired images. OT runs in the
student's joint space (S-CLIP's choice, detached) or in the frozen unimodal spaces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sotalign.losses import Terms
from sotalign.objectives.base import Objective, Step
from sotalign.ot import sinkhorn


@torch.no_grad()
def caption_pseudo_labels(
    unpaired: torch.Tensor, paired: torch.Tensor, eps: float, n_iter: int, hard: bool
) -> torch.Tensor:
    """(n_unpaired, n_paired) rows of target probabilities over the paired samples' partners."""
    affinity = F.normalize(unpaired.float(), dim=1) @ F.normalize(paired.float(), dim=1).T
    log_plan = sinkhorn(affinity, eps, n_iter, symmetric=False).log_plan
    if hard:
        return F.one_hot(log_plan.argmax(1), paired.shape[0]).to(affinity.dtype)
    return F.softmax(log_plan, dim=1)  # the plan's rows, each normalised to 1


def soft_cross_entropy(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


class SCLIPObjective(Objective):
    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        total, terms = super().__call__(step)
        config, inputs, rows = self.config, step.inputs, step.rows
        images, texts = step.paired()
        extra_images = step.images(inputs.unpaired_images, rows.images)
        extra_texts = step.texts(inputs.unpaired_texts, rows.texts)
        if config.sclip_space == "joint":
            spaces = (extra_images, images), (extra_texts, texts)
        else:
            spaces = (
                (inputs.unpaired_images[rows.images], inputs.paired_images[rows.pairs]),
                (inputs.unpaired_texts[rows.texts], inputs.paired_texts[rows.pairs]),
            )
        options = {"eps": config.sclip_eps, "n_iter": config.sclip_iters, "hard": config.sclip_labels == "hard"}
        image_targets = caption_pseudo_labels(*spaces[0], **options)  # unpaired image -> paired captions
        text_targets = caption_pseudo_labels(*spaces[1], **options)  # unpaired text -> paired images
        scale = step.siglip.log_scale.detach().exp()
        image_term = soft_cross_entropy(image_targets, scale * extra_images @ texts.T)
        text_term = soft_cross_entropy(text_targets, scale * extra_texts @ images.T)
        terms.update({"sclip/image": image_term, "sclip/text": text_term})
        return total + config.sclip_image_weight * image_term + config.sclip_text_weight * text_term, terms
