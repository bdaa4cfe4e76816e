"""STRUCTURE (Groger et al., NeurIPS 2025; paper 4): keep each modality's own geometry.

The regulariser compares, per modality, the random-walk transition matrix of the frozen
unimodal embeddings with that of the aligned ones: rows are softmax(cos / temperature) over
mean-centred, L2-normalised embeddings, level l uses the l-th matrix power (l-hop walks), and
the two are compared with the Jensen-Shannon divergence, averaged over rows and levels. The
method adds lambda times the mean of the image and text terms to SigLIP, with lambda ramped up
linearly over ``structure_warmup`` steps. ``structure`` applies it to the pairs of the step,
``semi_structure`` to the pairs plus the step's unpaired samples (paper Table 4's two rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sotalign.losses import Terms
from sotalign.objectives.base import Objective, Step

_TINY = 1e-12  # keeps the logs of (numerically) zero transition probabilities finite


def transition_matrix(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-stochastic softmax(cos / temperature) of the mean-centred normalised embeddings."""
    x = F.normalize(embeddings, dim=1)
    x = x - x.mean(0)
    return F.softmax(x @ x.T / temperature, dim=1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over rows of JS(p_i, q_i) = (KL(p_i || m_i) + KL(q_i || m_i)) / 2, m = (p + q) / 2 (nats)."""
    m = 0.5 * (p + q)
    log_m = (m + _TINY).log()
    kl_p = (p * ((p + _TINY).log() - log_m)).sum(1)
    kl_q = (q * ((q + _TINY).log() - log_m)).sum(1)
    return (0.5 * (kl_p + kl_q)).mean()


def structure_regularizer(
    original: torch.Tensor, aligned: torch.Tensor, levels: int = 1, temperature: float = 0.07
) -> torch.Tensor:
    """Mean over levels 1..L of JS(T_original^l, T_aligned^l) (paper App. A.2: L = 1, temperature 0.07)."""
    dtype = torch.promote_types(aligned.dtype, torch.float32)  # float32 at least, also under autocast
    t_original = transition_matrix(original.to(dtype), temperature)
    t_aligned = transition_matrix(aligned.to(dtype), temperature)
    total = aligned.new_zeros(())
    for level in range(1, levels + 1):
        total = total + js_divergence(
            torch.linalg.matrix_power(t_original, level), torch.linalg.matrix_power(t_aligned, level)
        )
    return total / levels


class StructureObjective(Objective):
    def __call__(self, step: Step) -> tuple[torch.Tensor, Terms]:
        total, terms = super().__call__(step)
        config, inputs, rows = self.config, step.inputs, step.rows
        images, texts = step.paired()
        original_images, original_texts = inputs.paired_images[rows.pairs], inputs.paired_texts[rows.pairs]
        if config.method == "semi_structure":
            images = torch.cat([images, step.images(inputs.unpaired_images, rows.images)])
            texts = torch.cat([texts, step.texts(inputs.unpaired_texts, rows.texts)])
            original_images = torch.cat([original_images, inputs.unpaired_images[rows.images]])
            original_texts = torch.cat([original_texts, inputs.unpaired_texts[rows.texts]])
        options = {"levels": config.structure_levels, "temperature": config.structure_temperature}
        regularizer = 0.5 * (
            structure_regularizer(original_images, images, **options)
            + structure_regularizer(original_texts, texts, **options)
        )
        ramp = min(1.0, step.number / config.structure_warmup) if config.structure_warmup else 1.0
        weight = config.structure_lambda * ramp
        terms.update({"structure": regularizer, "structure/lambda": torch.tensor(weight)})
        return total + weight * regularizer, terms
