"""SOTAlign's stage-2 objective (paper Algorithm 1, eq. 5): SigLIP on the pairs plus alpha times a
divergence (KLOT by default, ``sotalign.losses``) between the student's and the teacher's geometry
on an unpaired batch, the teacher's projections of the pool precomputed in ``Stage2Inputs``."""

from __future__ import annotations

import torch

from sotalign.config import AlignConfig
from sotalign.losses import Terms, get_divergence
from sotalign.objectives.base import Objective, Stage2Inputs, Step, embed
from sotalign.ot_blockwise import TeacherPlanCache


class SOTAlignObjective(Objective):
    """SigLIP on the pairs + alpha * DIV(K[f(X_b), g(Y_b)] || K[X_b W_x, Y_b W_y]) (paper eq. 5)."""

    def __init__(self, config: AlignConfig, inputs: Stage2Inputs):
        super().__init__(config, inputs)
        self.divergence = get_divergence(config.divergence)
        self.teacher_cache = TeacherPlanCache()  # one teacher solve per run when the unpaired batch is the whole pool

    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        total, terms = super().__call__(step)
        config, inputs, images, texts = self.config, step.inputs, step.rows.images, step.rows.texts
        local = step.distributed is not None and config.ot_scope == "local"
        if local:  # one plan per worker, on its own slice; 1 / world size so that summed gradients average them
            images, texts = step.distributed.shard(images), step.distributed.shard(texts)
            student_images = embed(step.image_head, inputs.unpaired_images[images])
            student_texts = embed(step.text_head, inputs.unpaired_texts[texts])
        else:
            student_images = step.images(inputs.unpaired_images, images)
            student_texts = step.texts(inputs.unpaired_texts, texts)
        div_terms = self.divergence(
            student_images,
            student_texts,
            inputs.teacher_images[images],
            inputs.teacher_texts[texts],
            eps_student=config.eps_student,
            eps_teacher=config.eps_teacher,
            n_iter=config.n_iter,
            mass=config.mass,
            teacher_cache=self.teacher_cache,
        )
        terms.update(div_terms)
        weight = config.alpha / step.distributed.world_size if local else config.alpha
        return total + weight * div_terms[config.divergence], terms
