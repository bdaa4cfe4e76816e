"""``AlignConfig``: every knob of the two-stage method, with the source of each default.

Sources: "paper" is docs/paper.md (arXiv v1 of SOTAlign), "[T]" the third-party port it
describes (paper.md 3.8), "findings" docs/findings.md. Where the paper is silent the
choice is ours and the comment says why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sotalign.checks import check_choice
from sotalign.heads import HEAD_INITS, HEAD_KINDS
from sotalign.losses import DIVERGENCES
from sotalign.methods import METHODS
from sotalign.ot import MASSES
from sotalign.teachers import TEACHER_KINDS

CENTERINGS = ("all", "pairs", "none")
SCLIP_LABELS = ("soft", "hard")
SCLIP_SPACES = ("joint", "unimodal")
OPTIMIZERS = ("lion", "adamw")
SCHEDULES = ("cosine", "constant")
PAPER_MAX_BATCH = 32768  # paper App. A.1: batches of up to 32k samples
PAPER_MAX_PAIRS_PER_BATCH = 10000  # paper App. A.1: "up to 10k paired samples" per batch


def coerce_field(name: str, value: Any, annotation: str) -> Any:
    """Check ``value`` against a field annotation ("float", "int | None", ...), accepting numeric
    strings (YAML reads ``1e-3`` as a string); raise ValueError naming the field otherwise."""
    if value is None:
        if "None" in annotation:
            return None
        raise ValueError(f"{name} must not be None")
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind == "str":
            if isinstance(value, str):
                return value
        elif kind == "int" and not isinstance(value, bool):
            number = float(value)
            if number.is_integer():
                return int(number)
        elif kind == "float" and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")


@dataclass
class AlignConfig:
    method: str = "sotalign"  # paper Algorithm 1; or a baseline of paper 4 (sotalign.methods.METHODS)
    # --- stage 1: the linear teacher -------------------------------------------------------
    teacher: str = "cca"  # paper Table 1: CCA + KLOT is the best setting, the paper's default
    teacher_dim: int | None = None  # paper silent (paper.md 2); None = min(d_image, d_text, n_pairs - 1), and <= head_dim with head_init "teacher"
    teacher_reg: float = 0.1  # paper App. A.1: ridge 0.1 added to the eigenvalues of inverted matrices
    teacher_cov_normalize: bool = True  # covariances / n ([T]; findings: clearly better than A^T A)
    normalize_inputs: bool = True  # L2-normalise raw embeddings ("centered and normalized", paper 2)
    center: str = "all"  # mean of paired + unpaired embeddings ([T]; pairs-only methods: the pairs'); "pairs" or "none" also possible
    teacher_steps: int = 2000  # contrastive teacher only: it is SAIL, trained like stage 2 (paper App. A.1)
    teacher_lr: float | None = None  # contrastive teacher only; None = lr
    # --- stage 2: the divergence on unpaired data -----------------------------------------
    divergence: str = "klot"  # paper Table 1
    alpha: float = 1.0  # paper grid {1e-5..1e-3} assumes mass n; with mass 1, alpha ~ 1 (findings, paper.md 3.5)
    eps_student: float = 0.05  # paper App. A.1 (joint space)
    eps_teacher: float = 0.01  # paper App. A.1 (released code: 0.005)
    n_iter: int = 100  # paper App. A.1: Sinkhorn iterations in both spaces
    mass: str = "unit"  # official klot.py: plans of total mass 1; "rows" = the paper's Pi_n (mass n)
    ot_scope: str = "global"  # data-parallel runs: one plan over the global batch (as one big GPU); "local" = per worker
    # --- stage 2: heads ---------------------------------------------------------------------
    head: str = "linear"  # paper 3.6: linear layers, "more robust" with few pairs
    head_dim: int = 1024  # paper 3.6: d = 1024
    head_init: str = "random"  # paper silent ("initialise f, g"); [T] uses "teacher"
    mlp_hidden: int | None = None  # MLP heads only; None = head_dim (our choice)
    siglip_init_scale: float = 20.0  # paper 3.2, following SAIL
    siglip_init_bias: float = -10.0  # paper 3.2, following SAIL
    # --- stage 2: optimisation --------------------------------------------------------------
    optimizer: str = "lion"  # paper App. A.1
    lr: float = 1e-4  # paper App. A.1: max LR
    weight_decay: float = 1e-5  # paper App. A.1
    schedule: str = "cosine"  # paper App. A.1: cosine annealing
    warmup_steps: int = 0  # paper App. A.1 mentions no warm-up
    steps: int = 2000  # paper App. A.1: 2000 iterations; 0 = the teacher alone
    batch_pairs: int | None = None  # None = all pairs, capped at 10k (paper App. A.1)
    batch_unpaired: int | None = None  # per modality; None = 32k - batch_pairs, capped by the pool (paper App. A.1)
    # --- baselines (paper App. A.2; the paper reports each one's best setting of its grid) -------
    structure_lambda: float = 10.0  # STRUCTURE's default; paper grid {0.1, 1, 10, 100, 1000}
    structure_levels: int = 1  # paper App. A.2: levels = 1
    structure_temperature: float = 0.07  # paper App. A.2: softmax temperature 0.07
    structure_warmup: int = 0  # paper App. A.2: no warm-up or 500 steps (lambda ramps up linearly)
    nnclr_k: int = 5  # paper App. A.2 grid {1, 5, 10}: each step's positive drawn from the top k neighbours
    nnclr_image_weight: float = 1.0  # paper App. A.2 grid {0, 0.1, 1, 10}
    nnclr_text_weight: float = 1.0  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_labels: str = "soft"  # S-CLIP: plan-weighted (soft) or argmax (hard) caption pseudo-labels
    sclip_space: str = "joint"  # S-CLIP solves OT in the model's space; paper 4 also tries the unimodal one
    sclip_image_weight: float = 1.0  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_text_weight: float = 1.0  # paper App. A.2 grid {0, 0.1, 1, 10}
    sclip_eps: float = 0.01  # S-CLIP (alinlab/s-clip custom/loss.py): reg = 1 / logit scale 100
    sclip_iters: int = 10  # S-CLIP custom/loss.py: numItermax=10
    asif_k: int = 800  # ASIF paper: the 800 most similar anchors are kept (capped at n_pairs)
    asif_p: float = 8.0  # ASIF paper: kept similarities raised to the power 8
    # --- bookkeeping ------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    log_every: int = 50  # history/callback period in steps (each log is one host sync)
    eval_every: int = 200  # validation period in steps, when validation data is given
    select_best: bool = True  # keep the heads with the best validation mean R@1 (paper: model selection on val)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_field(f.name, getattr(self, f.name), str(f.type)))
        check_choice(self.method, METHODS, "method")
        check_choice(self.teacher, TEACHER_KINDS, "teacher")
        check_choice(self.sclip_labels, SCLIP_LABELS, "sclip_labels")
        check_choice(self.sclip_space, SCLIP_SPACES, "sclip_space")
        if self.method == "csa" and self.teacher != "cca":
            raise ValueError(f"method 'csa' weights CCA's canonical directions: it needs teacher 'cca', got {self.teacher!r}")
        check_choice(self.center, CENTERINGS, "center")
        check_choice(self.divergence, DIVERGENCES, "divergence")
        check_choice(self.mass, MASSES, "KLOT mass")
        check_choice(self.ot_scope, ("global", "local"), "ot_scope")
        check_choice(self.head, HEAD_KINDS, "head kind")
        check_choice(self.head_init, HEAD_INITS, "head_init")
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.schedule, SCHEDULES, "schedule")
        for name in ("eps_student", "eps_teacher", "lr", "head_dim", "n_iter", "log_every", "eval_every",
                     "structure_temperature", "structure_levels", "nnclr_k", "sclip_eps", "sclip_iters", "asif_k", "asif_p"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("alpha", "teacher_reg", "weight_decay", "steps", "warmup_steps", "teacher_steps",
                     "structure_lambda", "structure_warmup", "nnclr_image_weight", "nnclr_text_weight",
                     "sclip_image_weight", "sclip_text_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.teacher_lr is not None and not self.teacher_lr > 0:
            raise ValueError(f"teacher_lr must be > 0 (or None), got {self.teacher_lr}")
        for name in ("teacher_dim", "batch_pairs", "batch_unpaired", "mlp_hidden"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None), got {value}")
        if self.head_init == "teacher" and self.teacher_dim is not None and self.teacher_dim > self.head_dim:
            raise ValueError(f"head_init 'teacher' needs teacher_dim <= head_dim (the heads hold the teacher's projection), "
                             f"got teacher_dim {self.teacher_dim} > head_dim {self.head_dim}")

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
    def trains(self) -> bool:
        """Whether stage 2 trains heads (``steps > 0`` and a method that trains)."""
        return METHODS[self.method].trains and self.steps > 0

    def with_method_preset(self) -> "AlignConfig":
        """This config with the fields its method fixes (e.g. ``steps=0`` for training-free ones)."""
        return self.replace(**METHODS[self.method].preset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AlignConfig":
        """Build from a mapping, naming any key that is not a field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AlignConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "AlignConfig":
        return dataclasses.replace(self, **changes)
