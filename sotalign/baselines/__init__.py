"""The paper's baselines (paper.md 4, App. A.2), adapted to frozen encoders and linear heads.

Trained ones are stage-2 objectives (SigLIP on the pairs plus their own term): semi-supervised
SAIL, STRUCTURE (supervised and semi-supervised), NNCLR as in DeCLIP, and S-CLIP.
Training-free references (ASIF, CSA) are built directly from the pairs by ``sotalign.fit``.
"""

from sotalign.baselines.nnclr import NNCLRObjective
from sotalign.baselines.sclip import SCLIPObjective
from sotalign.baselines.semi_sail import SemiSAILObjective
from sotalign.baselines.structure import StructureObjective

BASELINE_OBJECTIVES = {
    "semi_sail": SemiSAILObjective,
    "structure": StructureObjective,
    "semi_structure": StructureObjective,
    "nnclr": NNCLRObjective,
    "sclip": SCLIPObjective,
}

__all__ = ["BASELINE_OBJECTIVES"]
