"""Stage-2 objectives, one module per trained method, and the registry that picks one by name.

Every objective is SigLIP on the pairs (``base.Objective``, the SAIL baseline) plus its method's
term: SOTAlign's divergence to the teacher (``sotalign``), and the paper's trained baselines
(paper.md 4, App. A.2): semi-supervised SAIL, STRUCTURE, NNCLR as in DeCLIP, S-CLIP. The
training-free methods (ASIF, CSA) build models, not losses: ``sotalign.training_free``.
"""

from __future__ import annotations

from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.objectives.base import BatchRows, Objective, Stage2Inputs, Step, embed
from sotalign.objectives.nnclr import NNCLRObjective
from sotalign.objectives.sclip import SCLIPObjective
from sotalign.objectives.semi_sail import SemiSAILObjective
from sotalign.objectives.sotalign import SOTAlignObjective
from sotalign.objectives.structure import StructureObjective

OBJECTIVES: dict[str, type[Objective]] = {  # keys: the trained methods of sotalign.methods.METHODS
    "sotalign": SOTAlignObjective,
    "sail": Objective,
    "semi_sail": SemiSAILObjective,
    "structure": StructureObjective,
    "semi_structure": StructureObjective,
    "nnclr": NNCLRObjective,
    "sclip": SCLIPObjective,
}


def build_objective(config: AlignConfig, inputs: Stage2Inputs) -> Objective:
    """The objective of ``config.method`` (precomputing what it needs from ``inputs``); SOTAlign
    without unpaired data (``divergence="none"`` or ``alpha=0``) is SAIL."""
    if config.method not in OBJECTIVES:
        raise InputError(
            f"method {config.method!r} trains no heads (it is training-free); sotalign.fit builds it directly"
        )
    if config.method == "sotalign" and not config.uses_unpaired:
        return Objective(config, inputs)
    return OBJECTIVES[config.method](config, inputs)


__all__ = ["OBJECTIVES", "BatchRows", "Objective", "Stage2Inputs", "Step", "build_objective", "embed"]
