"""Fixtures of the method's tests: how the Sinkhorn kernels' products run."""

from __future__ import annotations

import pytest
import torch

from sotalign import matvec


@pytest.fixture
def threads():
    """Three intra-op threads (uneven blocks on purpose), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.fixture(params=["torch's products", "split, one pass"])
def products(request, threads, monkeypatch):
    """Each test twice: kernel products as torch's own, and (as on a CPU at scale) split over three threads
    with the compiled one-pass iteration, whatever the kernel's size."""
    if request.param == "split, one pass":
        monkeypatch.setattr(matvec, "MIN_SPLIT_NUMEL", 0)
    return request.param
