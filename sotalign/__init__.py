"""SOTAlign: semi-supervised alignment of frozen vision and language encoders via optimal transport.

The public API: ``fit`` (two-stage training), ``AlignConfig``, ``AlignedModel``, and the
modules ``ot`` (Sinkhorn, KLOT), ``teachers``, ``losses``, ``heads``, ``evaluation`` and
``data``. Pure PyTorch: no Ray, no MLflow (those live in ``orchestrator``).
"""

from sotalign.config import AlignConfig
from sotalign.model import AlignedModel
from sotalign.two_stage import fit

__all__ = ["AlignConfig", "AlignedModel", "fit"]
__version__ = "0.1.0"
