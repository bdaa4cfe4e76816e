"""The thread-split kernel products equal torch's own, bit for bit from call to call."""

from __future__ import annotations

import os
import select
import threading

import pytest
import torch

from sotalign import matvec
from sotalign.matvec import MIN_SPLIT_NUMEL, OnePass, kernel_times, lend_threads, splits, threads_back, times_kernel


def _kernel(n: int, m: int) -> torch.Tensor:
    return torch.rand(n, m, generator=torch.Generator().manual_seed(n + m))


def _split_workers() -> int:
    return sum(t.name.startswith("sotalign-matvec") for t in threading.enumerate())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_products_match_the_float64_reference(threads, dtype):
    n, m = 2051, MIN_SPLIT_NUMEL // 2048 + 7  # above the split threshold, rows not divisible by 3
    kernel = _kernel(n, m).to(dtype)
    w_cols, w_rows = torch.rand(m, dtype=dtype), torch.rand(n, dtype=dtype)
    rows, cols = kernel_times(kernel, w_cols), times_kernel(w_rows, kernel)
    assert _split_workers() >= threads  # the pool really ran the products
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(rows.double(), kernel.double() @ w_cols.double(), rtol=tol, atol=0)
    torch.testing.assert_close(cols.double(), w_rows.double() @ kernel.double(), rtol=tol, atol=0)
    assert torch.equal(rows, kernel_times(kernel, w_cols)) and torch.equal(cols, times_kernel(w_rows, kernel))


def test_one_pass_gives_both_products(threads, monkeypatch):
    """``OnePass`` over blocks of 5 rows (uneven across the three threads, the last block short):
    the row sums and the column sums weighted by a function of them, as float64 computes them apart."""
    n, m = 2051, MIN_SPLIT_NUMEL // 2048 + 7
    monkeypatch.setattr(matvec, "FUSED_BLOCK_BYTES", 5 * m * 4)
    kernel, w = _kernel(n, m), torch.rand(m)
    assert splits(kernel)
    seen, one_pass = [], OnePass(kernel)
    sums, cols = one_pass(w, lambda s, out: seen.append(len(s)) or torch.reciprocal(s, out=out))
    sums = sums.clone()
    assert sum(seen) == n and max(seen) == 5 and min(seen) < 5  # every row once, in blocks of at most 5
    rows_ref = kernel.double() @ w.double()
    torch.testing.assert_close(sums.double(), rows_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(cols.double(), (1 / rows_ref) @ kernel.double(), rtol=1e-5, atol=0)
    again = one_pass(w, lambda s, out: torch.reciprocal(s, out=out))
    assert torch.equal(again[0], sums) and torch.equal(again[1], cols)  # the same bits, whatever the timing


def test_lent_threads_come_back_for_a_recomputation_and_after_the_half_step(threads):
    kernel = _kernel(2048, MIN_SPLIT_NUMEL // 2048)
    with lend_threads(kernel):
        assert torch.get_num_threads() == 1  # the half-step's own vector ops
        with threads_back():
            assert torch.get_num_threads() == threads  # a guarded sum's recomputation
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    with threads_back():  # outside a half-step: nothing to give back
        assert torch.get_num_threads() == threads


def test_small_kernels_and_recorded_graphs_use_torch_directly(threads):
    small = _kernel(64, 64)
    w = torch.rand(64)
    assert torch.equal(kernel_times(small, w), small @ w)
    big = _kernel(2048, MIN_SPLIT_NUMEL // 2048).requires_grad_()
    out = times_kernel(torch.rand(2048), big)
    assert out.grad_fn is not None  # differentiable: torch's product, not the pool's
    out.sum().backward()
    assert big.grad is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_still_computes_its_products(threads):
    kernel, w = _kernel(2048, MIN_SPLIT_NUMEL // 2048), torch.rand(MIN_SPLIT_NUMEL // 2048)
    expected = kernel_times(kernel, w)  # the parent's pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (a data loader's worker, say): the parent's pool threads did not survive the fork
        ok = torch.equal(kernel_times(kernel, w), expected)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)  # a child stuck on a dead pool never answers
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert ready and os.read(read, 1) == b"1"
