"""The thread-split kernel products equal torch's own, bit for bit from call to call."""

from __future__ import annotations

import os
import select
import subprocess
import sys
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_gives_both_products(threads, dtype):
    """``OnePass`` (rows uneven across the three threads, a short last group of four): the row sums, and
    the column sums weighted by their reciprocals (0 below the floor), as float64 computes them apart."""
    n, m = 2051, MIN_SPLIT_NUMEL // 2048 + 7
    kernel, w = _kernel(n, m).to(dtype), torch.rand(m, dtype=dtype)
    kernel[[5, 681]] *= 1e-30  # two rows whose sums fall below the floor, one in the short group 680-682
    assert splits(kernel)
    rows_ref = kernel.double() @ w.double()
    for floor in (0.0, 1e-20):
        one_pass = OnePass(kernel, floor)
        sums, cols = (part.clone() for part in one_pass(w))
        weights = torch.where(rows_ref >= floor, 1 / rows_ref, 0.0)
        assert int((weights == 0).sum()) == (2 if floor else 0)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(sums.double(), rows_ref, rtol=tol, atol=0)
        torch.testing.assert_close(cols.double(), weights @ kernel.double(), rtol=tol, atol=0)
        again = one_pass(w)
        assert torch.equal(again[0], sums) and torch.equal(again[1], cols)  # the same bits, whatever the timing


def test_one_pass_checks_its_vector_and_lets_nan_through(threads, monkeypatch):
    monkeypatch.setattr(matvec, "MIN_SPLIT_NUMEL", 0)
    kernel = _kernel(6, 4)
    with pytest.raises(ValueError, match="w must be a vector of 4"):
        OnePass(kernel)(torch.rand(5))  # the compiled loop would read past it
    with pytest.raises(ValueError, match="torch.float32"):
        OnePass(kernel)(torch.rand(4, dtype=torch.float64))
    kernel[2, 1] = float("nan")
    sums, cols = OnePass(kernel, 1e-20)(torch.rand(4))
    assert sums.isnan().sum() == 1 and cols.isnan().all()  # a NaN is not dropped as a tiny sum would be


def test_the_loop_compiles_where_nowhere_is_writable_to_cache_it():
    """numba raises at decoration when it finds no writable cache place: the loop is then compiled uncached."""
    code = (
        "from numba.core import caching; caching.CacheImpl._locator_classes = []\n"
        "import numpy as np; from sotalign.one_pass_kernel import rows_pass\n"
        "k = np.ones((3, 2), np.float32); s = np.empty(3, np.float32); c = np.empty(2, np.float32)\n"
        "rows_pass(k, np.ones(2, np.float32), s, c, 0, 3, np.array([0, 1, 0], np.float32))\n"
        "assert rows_pass._cache.__class__.__name__ == 'NullCache' and (s == 2).all() and (c == 1.5).all()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_one_pass_with_fewer_rows_than_a_group_per_thread(threads, monkeypatch):
    monkeypatch.setattr(matvec, "MIN_SPLIT_NUMEL", 0)
    kernel, w = _kernel(5, 9), torch.rand(9)  # threads of 1, 2 and 2 rows
    sums, cols = OnePass(kernel)(w)
    rows_ref = kernel.double() @ w.double()
    torch.testing.assert_close(sums.double(), rows_ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(cols.double(), (1 / rows_ref) @ kernel.double(), rtol=1e-6, atol=0)


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
