"""What every stage-2 objective is built on: its inputs, one ``Step``, and SigLIP on the pairs.

An ``Objective`` turns one ``Step`` (the heads, the rows drawn for it as ``BatchRows``, the
step number, its RNG and a way to embed rows) into ``(total loss, named terms)``. The base
``Objective`` is SigLIP on the pairs (paper 3.2): the SAIL baseline, and the start of every other
method (one module each in this package). ``Step`` hides data parallelism: with a
``DistributedContext`` each rank embeds its slice of the rows and the slices are gathered, so
every objective sees the global batch (docs: sotalign.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sotalign.config import AlignConfig
from sotalign.distributed import DistributedContext
from sotalign.losses import Terms


@dataclass
class Stage2Inputs:
    """Preprocessed embeddings on the training device.

    ``teacher_images``/``teacher_texts`` are the L2-normalised teacher projections of the
    unpaired rows (same order). ``val_*`` are the validation images and captions for model
    selection: caption j describes image ``val_caption_image[j]`` and the images of one
    ``val_image_groups`` value share their captions (None: held-out pairs, caption j of image j).
    ``caption_groups`` (set here) numbers the pairs' distinct captions: pairs that carry the same
    caption (an identical text embedding: on Iconify, two styles of one concept) are positives of
    each other in every pair matrix, never negatives; None when every caption is distinct.
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
    caption_groups: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        distinct, groups = torch.unique(self.paired_texts, dim=0, return_inverse=True)
        self.caption_groups = groups if len(distinct) < len(self.paired_texts) else None


@dataclass
class BatchRows:
    """Global row indices of one step: pairs, unpaired images, unpaired texts (None: not used)."""

    pairs: torch.Tensor
    images: torch.Tensor | None = None
    texts: torch.Tensor | None = None


def embed(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A head's L2-normalised output: the joint-space embedding."""
    return F.normalize(head(x), dim=-1)


class Step:
    """One optimisation step: the heads, SigLIP, the inputs, the rows drawn (``BatchRows``), the step
    number (from 1), the run's RNG and the (optional) data-parallel context."""

    def __init__(
        self,
        image_head: nn.Module,
        text_head: nn.Module,
        siglip: nn.Module,
        inputs: Stage2Inputs,
        rows: BatchRows,
        number: int,
        generator: torch.Generator,
        distributed: DistributedContext | None = None,
    ):
        self.image_head, self.text_head, self.siglip = image_head, text_head, siglip
        self.inputs, self.rows, self.number, self.generator, self.distributed = (
            inputs,
            rows,
            number,
            generator,
            distributed,
        )
        self._paired: tuple[torch.Tensor, torch.Tensor] | None = None

    def images(self, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Joint-space embeddings of ``source[rows]`` (image head), for the whole global batch."""
        return self._embed(self.image_head, source, rows)

    def texts(self, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._embed(self.text_head, source, rows)

    def _embed(self, head: nn.Module, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.distributed is None:
            return embed(head, source[rows])
        return self.distributed.gather(embed(head, source[self.distributed.shard(rows)]), len(rows))

    def pair_positives(self) -> torch.Tensor | None:
        """(pairs, pairs) mask of this step's pairs that share their caption (the diagonal and every twin),
        None when they all differ: the positives of the pair matrix."""
        groups = self.inputs.caption_groups
        if groups is None:
            return None
        mine = groups[self.rows.pairs]
        return mine[:, None] == mine[None, :]

    def paired(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint-space embeddings of this step's pairs (computed once per step)."""
        if self._paired is None:
            self._paired = (
                self.images(self.inputs.paired_images, self.rows.pairs),
                self.texts(self.inputs.paired_texts, self.rows.pairs),
            )
        return self._paired


class Objective:
    """SigLIP on the pairs: the SAIL baseline, and the base of every other method."""

    def __init__(self, config: AlignConfig, inputs: Stage2Inputs):
        self.config = config

    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        images, texts = step.paired()
        terms = step.siglip(images @ texts.T, positive_mask=step.pair_positives())
        return terms["siglip"], terms
