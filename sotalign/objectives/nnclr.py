"""NNCLR as DeCLIP uses it (paper 4): nearest neighbours as extra positives.

For the caption of a pair, its nearest neighbours among all texts (paired and unpaired) in
the frozen text space are further plausible captions of the pair's image; symmetrically for
images. Neighbours are found once, in the frozen spaces (paper App. A.2); each step draws one
of the top k per pair and adds w_text * SigLIP(f(A), g(NN_text(B))) + w_image *
SigLIP(f(NN_image(A)), g(B)) to SigLIP on the pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sotalign.checks import InputError
from sotalign.losses import Terms
from sotalign.objectives.base import Objective, Stage2Inputs, Step

_CHUNK_ELEMENTS = 1 << 24  # similarity entries per chunk of the neighbour search (64 MiB in float32)


@torch.no_grad()
def nearest_neighbours(
    queries: torch.Tensor, pool: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """(n, k) indices of the k most cosine-similar pool rows per query, best first; ``exclude[i]``
    is a pool row never returned for query i (the query itself), chunked over queries."""
    if not 1 <= k <= pool.shape[0] - (exclude is not None):
        raise InputError(f"k={k} neighbours asked for among {pool.shape[0]} pool rows")
    q, p = F.normalize(queries.float(), dim=1), F.normalize(pool.float(), dim=1)
    chunk = max(1, _CHUNK_ELEMENTS // p.shape[0])
    out = []
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ p.T
        if exclude is not None:
            sims.scatter_(1, exclude[start : start + chunk, None].to(sims.device), float("-inf"))
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out)


class NNCLRObjective(Objective):
    def __init__(self, config, inputs: Stage2Inputs):
        super().__init__(config, inputs)
        self.image_pool = _pool(inputs.paired_images, inputs.unpaired_images)
        self.text_pool = _pool(inputs.paired_texts, inputs.unpaired_texts)
        own = torch.arange(inputs.paired_images.shape[0], device=inputs.paired_images.device)  # pairs lead each pool
        k = min(config.nnclr_k, self.image_pool.shape[0] - 1, self.text_pool.shape[0] - 1)
        self.image_neighbours = nearest_neighbours(inputs.paired_images, self.image_pool, k, own)
        self.text_neighbours = nearest_neighbours(inputs.paired_texts, self.text_pool, k, own)

    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        total, terms = super().__call__(step)
        config, pairs = self.config, step.rows.pairs
        images, texts = step.paired()
        k = self.text_neighbours.shape[1]
        pick_text, pick_image = torch.randint(k, (2, len(pairs)), generator=step.generator).to(pairs.device)
        neighbour_texts = step.texts(self.text_pool, self.text_neighbours[pairs, pick_text])
        neighbour_images = step.images(self.image_pool, self.image_neighbours[pairs, pick_image])
        twins = step.pair_positives()  # a neighbour of a caption is a positive of every pair carrying it
        text_term = step.siglip(images @ neighbour_texts.T, positive_mask=twins)["siglip"]
        image_term = step.siglip(neighbour_images @ texts.T, positive_mask=twins)["siglip"]
        terms.update({"nnclr/text": text_term, "nnclr/image": image_term})
        return total + config.nnclr_text_weight * text_term + config.nnclr_image_weight * image_term, terms


def _pool(paired: torch.Tensor, unpaired: torch.Tensor | None) -> torch.Tensor:
    return paired if unpaired is None else torch.cat([paired, unpaired])
