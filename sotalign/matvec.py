"""Matrix-vector products of a Sinkhorn kernel, split over the CPU's threads by rows, and done in one pass.

A matvec Sinkhorn iteration is two matrix-vector products over its n x m kernel and little else,
so its speed is how fast it reads the kernel. On a CPU, one library GEMV threaded over all cores read
it at 66-75% of the copy bandwidth's two reads, and one GEMV per thread on that thread's own block
of rows, each a single-threaded call, at 82-94% at n = 8192 (2-core x86, MKL, two runs; noisier at 4096:
docs/performance.md, ``python -m benchmarks.run --suites sinkhorn``). So on a CPU with several intra-op threads a large
product is cut into one block of rows per thread, run on a small pool of Python threads (torch releases
the GIL inside the product): ``kernel @ w`` gathers the blocks' rows, ``w @ kernel`` adds the blocks'
partial column sums in a fixed order, so the result does not depend on thread timing. ``OnePass`` goes
further: each thread's compiled loop (``sotalign.one_pass_kernel``) gives its rows' sums and, while the
rows are in cache, their share of the column sums weighted by the sums' reciprocals, so an iteration reads
the kernel from memory once (at 119-164% of the two-read bound, n = 4096-8192, one run). Elsewhere (GPU, one thread,
small kernels, a graph being recorded) the product is torch's own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

# below this many entries (16 MiB of float32) a kernel sits in the caches and a split's hand-off
# (tens of microseconds) costs more than it gains: torch's own product is used
MIN_SPLIT_NUMEL = 1 << 22

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_lent = threading.local()  # .threads: the intra-op threads a caller lent to its products (``lend_threads``)


@contextmanager
def lend_threads(kernel: torch.Tensor) -> Iterator[None]:
    """Within: where ``kernel``'s products are split, the calling thread's own torch ops run on one thread
    and the products on a pool of the intra-op threads it had. A Sinkhorn half-step runs in this: its O(n)
    vector ops gain nothing from threads, and each exp or log would leave OpenMP's workers spinning on
    the very cores the next product needs (measured on 2 cores: a split product after an exp took
    15-18 ms instead of 10)."""
    threads = _split_threads(kernel, kernel.new_empty(()))
    if threads == 1 or getattr(_lent, "threads", None):
        yield
        return
    before = torch.get_num_threads()
    try:
        _lent.threads = threads
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(before)
        _lent.threads = None


@contextmanager
def threads_back() -> Iterator[None]:
    """Within ``lend_threads``: the calling thread's ops on all the threads it lent, for a large product
    amid a half-step (a guarded sum recomputed from its logits)."""
    threads = getattr(_lent, "threads", None)
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


def _worker_setup() -> None:
    """A pool thread: one intra-op thread, and subnormal numbers flushed to zero (both thread-local: the
    calling thread keeps its own settings). A product below float32's smallest normal number is a term a
    Sinkhorn sum already counts as lost (``sotalign.ot.TINY_SUM``), and a guarded kernel's products make
    subnormals often enough to slow them (8% of them at eps* = 0.01, n = 8192: a single-threaded E w took
    15.9 ms, 12.4 ms flushed)."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def _pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` single-threaded workers: a forked child (a data loader's worker)
    inherits the parent's pool without its threads, where a product would wait forever, so it makes its own."""
    key = (os.getpid(), threads)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="sotalign-matvec", initializer=_worker_setup)
    return _pools[key]


def _split_threads(kernel: torch.Tensor, w: torch.Tensor) -> int:
    """How many row blocks to cut ``kernel`` into: 1 (no split) off the CPU, for small kernels, with one
    intra-op thread, or where autograd would record the product."""
    if kernel.device.type != "cpu" or kernel.numel() < MIN_SPLIT_NUMEL:
        return 1
    if torch.is_grad_enabled() and (kernel.requires_grad or w.requires_grad):
        return 1
    return min(getattr(_lent, "threads", None) or torch.get_num_threads(), kernel.shape[0])


def kernel_times(kernel: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``kernel @ w`` (n x m times m), split by rows over the CPU's threads where that is faster."""
    threads = _split_threads(kernel, w)
    if threads == 1:
        return kernel @ w
    blocks = kernel.tensor_split(threads)
    return torch.cat(list(_pool(threads).map(torch.mv, blocks, [w] * threads)))


def splits(kernel: torch.Tensor) -> bool:
    """True where ``kernel``'s products are split over threads (and ``OnePass`` applies)."""
    return _split_threads(kernel, kernel.new_empty(())) > 1


class OnePass:
    """``(s, z @ kernel)`` for ``s = kernel @ w`` and ``z = 1 / s`` (0 where ``s < floor``), in one read of
    ``kernel``.

    Each pool thread runs the compiled loop of ``sotalign.one_pass_kernel`` over its own rows (four at a
    time: their sums, then at once their weighted share of the column sums while they are in cache), into
    its own partial column sums; those are added in a fixed order, so the result does not depend on the
    threads' timing. Buffers are made once per kernel, since a solve makes a hundred passes over it. The
    second read comes from cache while a group's working set (four rows, w and the column sums: 6 m
    entries) fits a core's L2, m up to about 80k float32 entries on a 2 MiB L2; beyond that it is still
    right, at the cost of two reads. A NaN sum weighs NaN. Only where ``splits(kernel)``.
    """

    def __init__(self, kernel: torch.Tensor, floor: float = 0.0):
        from sotalign.one_pass_kernel import rows_pass  # numba: compiled (or loaded from its cache) on first use

        n, m = kernel.shape
        self._rows_pass, self._kernel = rows_pass, kernel.numpy()
        self._threads = _split_threads(kernel, kernel.new_empty(()))
        self.sums = kernel.new_empty(n)  # s, rewritten by every call
        self._partials = [kernel.new_empty(m) for _ in range(self._threads)]
        self._edges = [n * k // self._threads for k in range(self._threads + 1)]
        self._constants = torch.tensor([0.0, 1.0, floor], dtype=kernel.dtype).numpy()

    def __call__(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, z @ kernel); s is this object's buffer, valid until the next call."""
        if w.shape != (self._kernel.shape[1],) or w.dtype != self.sums.dtype:  # the loop checks no bounds
            raise ValueError(
                f"w must be a vector of {self._kernel.shape[1]} {self.sums.dtype}, got {tuple(w.shape)} {w.dtype}"
            )
        w_, sums = w.contiguous().numpy(), self.sums.numpy()

        def part(k: int) -> None:
            start, stop = self._edges[k], self._edges[k + 1]
            self._rows_pass(self._kernel, w_, sums, self._partials[k].numpy(), start, stop, self._constants)

        list(_pool(self._threads).map(part, range(self._threads)))
        total = self._partials[0].clone()
        for other in self._partials[1:]:
            total.add_(other)
        return self.sums, total


def times_kernel(w: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``w @ kernel`` (n times n x m), split by rows over the CPU's threads where that is faster."""
    threads = _split_threads(kernel, w)
    if threads == 1:
        return w @ kernel
    blocks, parts = kernel.tensor_split(threads), w.tensor_split(threads)
    partial = list(_pool(threads).map(lambda block, part: part @ block, blocks, parts))
    total = partial[0]
    for other in partial[1:]:
        total.add_(other)
    return total
