"""The stage-2 loss of each method, one step at a time.

An ``Objective`` turns one step's ``Batch`` (the rows drawn for this step and a way to embed
them) into ``(total loss, named terms)``. Every method starts from SigLIP on the pairs
(paper 3.2); SOTAlign adds alpha times a divergence to the teacher on unpaired data (paper
Algorithm 1), the baselines (``sotalign.baselines``) add their own terms. ``Batch`` hides
data parallelism: with a ``DistributedContext`` each rank embeds its slice of the rows and
the slices are gathered, so every objective sees the global batch (docs: sotalign.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sotalign.config import AlignConfig
from sotalign.distributed import DistributedContext
from sotalign.losses import Terms, get_divergence
from sotalign.ot_blockwise import TeacherPlanCache


@dataclass
class Stage2Inputs:
    """Preprocessed embeddings on the training device.

    ``teacher_images``/``teacher_texts`` are the L2-normalised teacher projections of the
    unpaired rows (same order). ``val_*`` are the validation images and captions for model
    selection: caption j describes image ``val_caption_image[j]`` and the images of one
    ``val_image_groups`` value share their captions (None: held-out pairs, caption j of image j).
    """

    paired_images: torch.Tensor
    paired_texts: torch.Tensor
    unpaired_images: torch.Tensor | None = None
    unpaired_texts: torch.Tensor | None = None
    teacher_images: torch.Tensor | None = None
    teacher_texts: torch.Tensor | None = None
    val_images: torch.Tensor | None = None
    val_texts: torch.Tensor | None = None
    val_caption_image: np.ndarray | None = None
    val_image_groups: np.ndarray | None = None


@dataclass
class BatchRows:
    """Global row indices of one step: pairs, unpaired images, unpaired texts (None: not used)."""

    pairs: torch.Tensor
    images: torch.Tensor | None = None
    texts: torch.Tensor | None = None


def embed(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A head's L2-normalised output: the joint-space embedding."""
    return F.normalize(head(x), dim=-1)


class Batch:
    """One step: the drawn rows, the heads, SigLIP, and the (optional) data-parallel context."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module, siglip: nn.Module, inputs: Stage2Inputs,
                 rows: BatchRows, step: int, generator: torch.Generator, distributed: DistributedContext | None = None):
        self.image_head, self.text_head, self.siglip = image_head, text_head, siglip
        self.inputs, self.rows, self.step, self.generator, self.distributed = inputs, rows, step, generator, distributed
        self._paired: tuple[torch.Tensor, torch.Tensor] | None = None

    def images(self, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Joint-space embeddings of ``source[rows]`` (image head), for the whole global batch."""
        return self._embed(self.image_head, source, rows)

    def texts(self, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._embed(self.text_head, source, rows)

    def _embed(self, head: nn.Module, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.distributed is None:
            return embed(head, source[rows])
        return self.distributed.gather(embed(head, source[self.distributed.shard(rows)]))

    def paired(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint-space embeddings of this step's pairs (computed once per step)."""
        if self._paired is None:
            self._paired = (self.images(self.inputs.paired_images, self.rows.pairs),
                            self.texts(self.inputs.paired_texts, self.rows.pairs))
        return self._paired


class Objective:
    """SigLIP on the pairs: the SAIL baseline, and the base of every other method."""

    def __init__(self, config: AlignConfig, inputs: Stage2Inputs):
        self.config = config

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, Terms]:
        images, texts = batch.paired()
        terms = batch.siglip(images @ texts.T)
        return terms["siglip"], terms


class SOTAlignObjective(Objective):
    """SigLIP on the pairs + alpha * DIV(K[f(X_b), g(Y_b)] || K[X_b W_x, Y_b W_y]) (paper eq. 5)."""

    def __init__(self, config: AlignConfig, inputs: Stage2Inputs):
        super().__init__(config, inputs)
        self.divergence = get_divergence(config.divergence)
        self.teacher_cache = TeacherPlanCache()  # one teacher solve per run when the unpaired batch is the whole pool

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, Terms]:
        total, terms = super().__call__(batch)
        config, inputs, images, texts = self.config, batch.inputs, batch.rows.images, batch.rows.texts
        local = batch.distributed is not None and config.ot_scope == "local"
        if local:  # one plan per worker, on its own slice; 1 / world size so that summed gradients average them
            images, texts = batch.distributed.shard(images), batch.distributed.shard(texts)
            student_images = embed(batch.image_head, inputs.unpaired_images[images])
            student_texts = embed(batch.text_head, inputs.unpaired_texts[texts])
        else:
            student_images = batch.images(inputs.unpaired_images, images)
            student_texts = batch.texts(inputs.unpaired_texts, texts)
        div_terms = self.divergence(
            student_images, student_texts, inputs.teacher_images[images], inputs.teacher_texts[texts],
            eps_student=config.eps_student, eps_teacher=config.eps_teacher, n_iter=config.n_iter, mass=config.mass,
            teacher_cache=self.teacher_cache,
        )
        terms.update(div_terms)
        weight = config.alpha / batch.distributed.world_size if local else config.alpha
        return total + weight * div_terms[config.divergence], terms


def build_objective(config: AlignConfig, inputs: Stage2Inputs) -> Objective:
    """The objective of ``config.method`` (precomputing what it needs from ``inputs``)."""
    from sotalign.baselines import BASELINE_OBJECTIVES

    if config.method == "sotalign":
        return SOTAlignObjective(config, inputs) if config.uses_unpaired else Objective(config, inputs)
    if config.method == "sail":
        return Objective(config, inputs)
    if config.method not in BASELINE_OBJECTIVES:
        raise ValueError(f"method {config.method!r} trains no heads (it is training-free); sotalign.fit builds it directly")
    return BASELINE_OBJECTIVES[config.method](config, inputs)
