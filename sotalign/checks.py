"""Input validation shared by the library's entry points, and ``InputError``, what they raise.

Every check raises ``InputError`` (a ``ValueError``) with a message that names the offending
argument and what was expected. The CLI prints exactly these as one ``error:`` line with exit
code 2; any other exception is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class InputError(ValueError):
    """Something the user gave is wrong (a value, a file, a setting): the message says what and why."""


def as_embeddings(x, name: str) -> torch.Tensor:
    """Return ``x`` as a 2-D floating tensor, or raise naming ``name`` and the problem."""
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n, dim) array of embeddings, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty (0 rows)")
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()
        raise InputError(f"{name} contains NaN/inf in {len(rows)} of {t.shape[0]} rows (first: {rows[:5].tolist()})")
    return t


def check_pairs(images: torch.Tensor, texts: torch.Tensor, name: str = "paired") -> None:
    """Paired embeddings need the same number of rows, and at least two pairs."""
    if images.shape[0] != texts.shape[0]:
        raise InputError(
            f"{name} images and texts must have the same number of rows "
            f"(row i of one is paired with row i of the other), got {images.shape[0]} and {texts.shape[0]}"
        )
    if images.shape[0] < 2:
        raise InputError(f"need at least 2 {name} image-text pairs, got {images.shape[0]}")


def check_same_dim(reference: torch.Tensor, other: torch.Tensor, ref_name: str, other_name: str) -> None:
    """Two embedding sets that go through the same encoder head must share their width."""
    if reference.shape[1] != other.shape[1]:
        raise InputError(
            f"{other_name} have dim {other.shape[1]} but {ref_name} have dim {reference.shape[1]}: "
            "they must come from the same encoder"
        )


def check_choice(value: str, choices: Iterable[str], name: str) -> None:
    """Raise if ``value`` is not one of ``choices``, listing them."""
    choices = list(choices)
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")


def check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise InputError(f"{name} must be > 0, got {value}")
