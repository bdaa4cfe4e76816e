"""The compiled loop of a one-pass Sinkhorn iteration (``sotalign.matvec.OnePass``), by numba.

For rows ``start:stop`` of a kernel E it writes the row sums s = E w and adds to ``cols`` the rows
weighted by z = 1 / s (0 where s < ``floor``: a guarded sum that may have underflowed, recomputed by
the caller). Rows go four at a time: their four dot products in one sweep, then their weighted sum
into ``cols`` while they are in the core's cache, so the kernel is read from memory once. Written in
numba rather than as torch calls on row blocks, since those calls' hand-offs cost a fifth of an
iteration or more (a probe at n = m = 22000 float32, 2 cores: 86-105 ms a pass as torch calls on 2 MiB
blocks, 67-69 ms compiled, against 59-65 ms to read the kernel at the copy bandwidth, in two runs; the
benchmark's table is in docs/performance.md). ``nogil``: the threads of
``OnePass``'s pool run it side by side. ``fastmath`` only to reassociate sums (SIMD) and fuse
multiply-adds; inf and NaN keep their meaning (numpy's error model: 1 / 0 is inf, a NaN sum weighs NaN).
Compiled once per process, and cached on disk where numba finds a writable place for it (beside this
file, ``NUMBA_CACHE_DIR`` or the user's cache); where it finds none (a read-only install and home) it is
compiled in each process instead, in under a second.
"""

from __future__ import annotations

import numba


def _rows_pass(kernel, w, sums, cols, start, stop, constants):
    """``sums[start:stop] = kernel[start:stop] @ w``; ``cols = z @ kernel[start:stop]``.

    ``constants``: 0, 1 and the floor, in the kernel's type (so that the loop keeps that type: a bare
    1.0 would make float32 arithmetic float64).
    """
    zero, one, floor = constants[0], constants[1], constants[2]
    m = kernel.shape[1]
    for j in range(m):
        cols[j] = zero
    i = start
    while i < stop:
        k = min(4, stop - i)  # a short last group repeats its last row with weight 0
        r0, r1, r2, r3 = kernel[i], kernel[i + min(1, k - 1)], kernel[i + min(2, k - 1)], kernel[i + min(3, k - 1)]
        s0 = s1 = s2 = s3 = zero
        for j in range(m):
            wj = w[j]
            s0 += r0[j] * wj
            s1 += r1[j] * wj
            s2 += r2[j] * wj
            s3 += r3[j] * wj
        z0 = zero if s0 < floor else one / s0
        z1 = zero if k < 2 or s1 < floor else one / s1
        z2 = zero if k < 3 or s2 < floor else one / s2
        z3 = zero if k < 4 or s3 < floor else one / s3
        sums[i] = s0
        if k > 1:
            sums[i + 1] = s1
        if k > 2:
            sums[i + 2] = s2
        if k > 3:
            sums[i + 3] = s3
        for j in range(m):
            cols[j] += z0 * r0[j] + z1 * r1[j] + z2 * r2[j] + z3 * r3[j]
        i += k


_COMPILE = dict(nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy")
try:
    rows_pass = numba.njit(cache=True, **_COMPILE)(_rows_pass)
except RuntimeError:  # "cannot cache function ...: no locator available": nowhere writable to cache it
    rows_pass = numba.njit(**_COMPILE)(_rows_pass)
