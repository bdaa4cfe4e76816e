"""The methods the paper compares (paper.md 4, Tables 1, 4, 5), by the name ``AlignConfig(method=...)``
and an experiment file's ``method:`` take.

Each entry says whether the method trains heads (stage 2) or is training-free, whether it
reads unpaired data, and the config fields it fixes (``preset``) so that what is logged is
what ran. The losses live in ``sotalign.objectives`` and ``sotalign.baselines``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MethodInfo:
    summary: str
    trains: bool = True  # stage 2 trains heads; False = training-free (a closed form of the pairs)
    uses_unpaired: bool = False  # reads unpaired images and texts
    preset: dict[str, Any] = field(default_factory=dict)  # config fields the method fixes


METHODS: dict[str, MethodInfo] = {
    "sotalign": MethodInfo(
        "teacher + SigLIP on pairs + alpha * divergence (klot/ginfonce/cka) on unpaired data (paper Alg. 1)",
        uses_unpaired=True,
    ),
    "sail": MethodInfo("SigLIP on the pairs only (SAIL, the supervised baseline)", preset={"divergence": "none"}),
    "semi_sail": MethodInfo(
        "SAIL with the unpaired images and texts as extra SigLIP negatives",
        uses_unpaired=True,
        preset={"divergence": "none"},
    ),
    "structure": MethodInfo(
        "SigLIP + the STRUCTURE regulariser on the pairs (supervised)", preset={"divergence": "none"}
    ),
    "semi_structure": MethodInfo(
        "SigLIP + the STRUCTURE regulariser on pairs and unpaired data",
        uses_unpaired=True,
        preset={"divergence": "none"},
    ),
    "nnclr": MethodInfo(
        "SigLIP + unimodal nearest neighbours as extra positives (NNCLR as in DeCLIP)",
        uses_unpaired=True,
        preset={"divergence": "none"},
    ),
    "sclip": MethodInfo(
        "SigLIP + S-CLIP caption-level pseudo-labels from OT to the paired samples",
        uses_unpaired=True,
        preset={"divergence": "none"},
    ),
    "teacher": MethodInfo(
        "the stage-1 linear teacher alone (paper Table 1, 'None' row)",
        trains=False,
        preset={"steps": 0, "divergence": "none"},
    ),
    "asif": MethodInfo(
        "ASIF: relative representations against the pairs (training-free)",
        trains=False,
        preset={"steps": 0, "divergence": "none"},
    ),
    "csa": MethodInfo(
        "CSA: ridge CCA with a correlation-weighted similarity (training-free)",
        trains=False,
        preset={"steps": 0, "divergence": "none", "teacher": "cca"},
    ),
}
