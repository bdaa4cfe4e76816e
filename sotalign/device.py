"""Device selection shared by training and the encoders."""

from __future__ import annotations

import torch


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) = cuda when available, else cpu; anything else as torch reads it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
