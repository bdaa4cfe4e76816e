"""``AlignConfig``: every knob of the two-stage method, with the source of each default.

Sources: "paper" is docs/notes/paper.md (arXiv v1 of SOTAlign), "[T]" the third-party port it
describes (paper.md 3.8), "findings" docs/notes/findings.md, "validation" the choice made on
iconify-emoji's validation split and confirmed on benchmarks it did not see
(docs/results/defaults-choice). Where the paper is silent the choice is ours and the comment
says why. The defaults are the ones every experiment file and search space of the project uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sotalign.checks import InputError
from sotalign.fields import check_fields, from_mapping, option
from sotalign.heads import HEAD_INITS, HEAD_KINDS
from sotalign.losses import DIVERGENCES
from sotalign.methods import METHODS
from sotalign.optim import OPTIMIZERS, SCHEDULES
from sotalign.ot import MASSES
from sotalign.teachers import TEACHER_KINDS

CENTERINGS = ("all", "pairs", "none")  # the centring mean: paired + unpaired data, the pairs only, or none
OT_SCOPES = ("global", "local")  # data-parallel KLOT: one plan over the global batch, or one per worker
SCLIP_LABELS = ("soft", "hard")
SCLIP_SPACES = ("joint", "unimodal")
PAPER_MAX_BATCH = 32768  # paper App. A.1: batches of up to 32k samples
PAPER_MAX_PAIRS_PER_BATCH = 10000  # paper App. A.1: "up to 10k paired samples" per batch


@dataclass
class AlignConfig:
    method: str = option(
        "sotalign", choices=METHODS
    )  # paper Algorithm 1; or a baseline of paper 4 (sotalign.methods.METHODS)
    # --- stage 1: the linear teacher -------------------------------------------------------
    teacher: str = option(
        "cca", choices=TEACHER_KINDS
    )  # paper Table 1: CCA + KLOT is the best setting, the paper's default
    teacher_dim: int | None = option(
        None, minimum=1
    )  # paper silent (paper.md 2); None = min(d_image, d_text, n_pairs - 1), and <= head_dim with head_init "teacher"
    teacher_reg: float = option(
        0.1, minimum=0
    )  # paper App. A.1: ridge 0.1 added to the eigenvalues of inverted matrices
    teacher_cov_normalize: bool = True  # covariances / n ([T]; findings: clearly better than A^T A)
    normalize_inputs: bool = True  # L2-normalise raw embeddings ("centered and normalized", paper 2)
    center: str = option(
        "all", choices=CENTERINGS
    )  # mean of paired + unpaired embeddings ([T]; pairs-only methods: the pairs'); "pairs" or "none" also possible
    teacher_steps: int = option(
        2000, minimum=0
    )  # contrastive teacher only: it is SAIL, trained like stage 2 (paper App. A.1)
    teacher_lr: float | None = option(None, above=0)  # contrastive teacher only; None = lr
    # --- stage 2: the divergence on unpaired data -----------------------------------------
    divergence: str = option("klot", choices=DIVERGENCES)  # paper Table 1
    alpha: float = option(
        3.0, minimum=0
    )  # validation, among {3, 10, 30} (docs/results/defaults-choice); mass-1 plans (paper.md 3.5: its grid is mass n)
    eps_student: float = option(0.05, above=0)  # paper App. A.1 (joint space)
    eps_teacher: float = option(
        0.05, above=0
    )  # validation: above the paper's 0.01 (App. A.1) at every alpha, start and width (docs/results/defaults-choice)
    n_iter: int = option(100, above=0)  # paper App. A.1: Sinkhorn iterations in both spaces
    mass: str = option(
        "unit", choices=MASSES, label="KLOT mass"
    )  # official klot.py: plans of total mass 1; "rows" = the paper's Pi_n (mass n)
    ot_scope: str = option(
        "global", choices=OT_SCOPES
    )  # data-parallel runs: one plan over the global batch (as one big GPU); "local" = per worker
    # --- stage 2: heads ---------------------------------------------------------------------
    head: str = option(
        "linear", choices=HEAD_KINDS, label="head kind"
    )  # paper 3.6: linear layers, "more robust" with few pairs
    head_dim: int = option(
        256, above=0
    )  # validation: 256 and 512 within noise (docs/results/defaults-choice); paper 3.6: 1024
    head_init: str = option(
        "teacher", choices=HEAD_INITS
    )  # validation: the 8 best of 24 settings start at the teacher (docs/results/defaults-choice); paper silent, [T] does
    mlp_hidden: int | None = option(None, minimum=1)  # MLP heads only; None = head_dim (our choice)
    siglip_init_scale: float = 20.0  # paper 3.2, following SAIL
    siglip_init_bias: float = -10.0  # paper 3.2, following SAIL
    # --- stage 2: optimisation --------------------------------------------------------------
    optimizer: str = option("lion", choices=OPTIMIZERS)  # paper App. A.1
    lr: float = option(1e-3, above=0)  # with steps: 300 (below); paper App. A.1: 1e-4 for 2000 steps
    weight_decay: float = option(1e-5, minimum=0)  # paper App. A.1
    schedule: str = option("cosine", choices=SCHEDULES)  # paper App. A.1: cosine annealing
    warmup_steps: int = option(0, minimum=0)  # paper App. A.1 mentions no warm-up
    steps: int = option(
        300, minimum=0
    )  # validation: within noise of the paper's lr 1e-4 x 2000 (-0.4) at 15% of the cost; 0 = the teacher alone
    batch_pairs: int | None = option(None, minimum=1)  # None = all pairs, capped at 10k (paper App. A.1)
    batch_unpaired: int | None = option(
        None, minimum=1
    )  # per modality; None = 32k - batch_pairs, capped by the pool (paper App. A.1)
    # --- baselines (paper App. A.2; the paper reports each one's best setting of its grid) -------
    structure_lambda: float = option(10.0, minimum=0)  # STRUCTURE's default; paper grid {0.1, 1, 10, 100, 1000}
    structure_levels: int = option(1, above=0)  # paper App. A.2: levels = 1
    structure_temperature: float = option(0.07, above=0)  # paper App. A.2: softmax temperature 0.07
    structure_warmup: int = option(0, minimum=0)  # paper App. A.2: no warm-up or 500 steps (lambda ramps up linearly)
    nnclr_k: int = option(
        5, above=0
    )  # paper App. A.2 grid {1, 5, 10}: each step's positive drawn from the top k neighbours
    nnclr_image_weight: float = option(1.0, minimum=0)  # paper App. A.2 grid {0, 0.1, 1, 10}
    nnclr_text_weight: float = option(1.0, minimum=0)  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_labels: str = option(
        "soft", choices=SCLIP_LABELS
    )  # S-CLIP: plan-weighted (soft) or argmax (hard) caption pseudo-labels
    sclip_space: str = option(
        "joint", choices=SCLIP_SPACES
    )  # S-CLIP solves OT in the model's space; paper 4 also tries the unimodal one
    sclip_image_weight: float = option(1.0, minimum=0)  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_text_weight: float = option(1.0, minimum=0)  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_eps: float = option(0.01, above=0)  # S-CLIP (alinlab/s-clip custom/loss.py): reg = 1 / logit scale 100
    sclip_iters: int = option(10, above=0)  # S-CLIP custom/loss.py: numItermax=10
    asif_k: int = option(800, above=0)  # ASIF paper: the 800 most similar anchors are kept (capped at n_pairs)
    asif_p: float = option(8.0, above=0)  # ASIF paper: kept similarities raised to the power 8
    # --- bookkeeping ------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    log_every: int = option(50, above=0)  # history/callback period in steps (each log is one host sync)
    eval_every: int = option(200, above=0)  # validation period in steps, when validation data is given
    select_best: bool = True  # keep the heads with the best validation mean R@1 (paper: model selection on val)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.method == "csa" and self.teacher != "cca":
            raise InputError(
                f"method 'csa' weights CCA's canonical directions: it needs teacher 'cca', got {self.teacher!r}"
            )
        if self.head_init == "teacher" and self.teacher_dim is not None and self.teacher_dim > self.head_dim:
            raise InputError(
                f"head_init 'teacher' needs teacher_dim <= head_dim (the heads hold the teacher's projection), "
                f"got teacher_dim {self.teacher_dim} > head_dim {self.head_dim}"
            )

    @property
    def uses_unpaired(self) -> bool:
        """Whether stage 2 reads unpaired data: SOTAlign with a divergence and ``alpha > 0``, and
        the semi-supervised baselines; never the pairs-only or training-free methods."""
        if self.method == "sotalign":
            return self.divergence != "none" and self.alpha > 0
        return METHODS[self.method].uses_unpaired and self.trains

    @property
    def centres_on_unpaired(self) -> bool:
        """Whether ``center="all"`` takes the unpaired data into the centring mean: for every method
        whose stage 2 reads it, and for the ``teacher`` method, which is SOTAlign's stage 1 (the
        teacher the student learns from, the one the paper's tables report). Pairs-only methods never do."""
        return self.uses_unpaired or self.method == "teacher"

    @property
    def depends_on_unpaired(self) -> bool:
        """Whether the unpaired data changes the result at all: stage 2 reads it, or the centring
        mean takes it in. False for SAIL and the other pairs-only methods, whose runs at one
        unpaired budget stand for every budget (``sotalign report``)."""
        return self.uses_unpaired or (self.centres_on_unpaired and self.center == "all")

    @property
    def trains(self) -> bool:
        """Whether stage 2 trains heads (``steps > 0`` and a method that trains)."""
        return METHODS[self.method].trains and self.steps > 0

    def with_method_preset(self) -> AlignConfig:
        """This config with the fields its method fixes (e.g. ``steps=0`` for training-free ones)."""
        return self.replace(**METHODS[self.method].preset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlignConfig:
        """Build from a mapping, naming any key that is not a field."""
        return from_mapping(cls, values, "AlignConfig")

    def replace(self, **changes: Any) -> AlignConfig:
        return dataclasses.replace(self, **changes)
