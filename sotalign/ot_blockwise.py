"""KLOT without n x m plans: Sinkhorn and the explicit gradient computed from the embeddings.

Dense ``sotalign.ot.klot`` takes the two affinity matrices and holds three n x m matrices. With
K = X Y^T given by its factors, ``klot_blockwise`` holds one, so that the paper's batch (10k pairs +
22k unpaired, paper App. A.1) fits in memory:

* each Sinkhorn solve holds one n x m matrix: the logits X Y^T / eps, turned in place into the
  matvec kernel exp(L - r) in the embeddings' float type. Where a small epsilon (the teacher's) could
  underflow a row or column sum, the solve is guarded (``sotalign.ot.TINY_SUM``): such sums are
  recomputed exactly from their rows or columns of X Y^T, so the plan stays the float64 one without a
  float64 kernel. Only where too many sums underflow does a solve fall back to a float64 kernel, or
  beyond float64's range to an online log-sum-exp over row blocks;
* the teacher is solved first and its kernel freed; the student's kernel is kept (when it is plain,
  i.e. exact) and read by the value and gradient loop, so the student's logits are computed once;
* the value KL(Q || P) and the explicit gradient (P - Q) / eps (Theorem 5.1) are summed over row
  blocks, the teacher's block recomputed from its embeddings: with G the gradient block, dX = G Y and
  dY += G^T X, so neither the gradient nor a second plan is ever formed;
* a ``TeacherPlanCache`` hit (the same teacher embeddings as the last call) does no teacher work at
  all: it keeps the teacher's plan, its marginals and sum Q log Q from the first solve.

It runs the very iteration of ``sotalign.ot.sinkhorn`` (the same half-steps, solver choice and
symmetric half-step), so it equals dense KLOT up to float rounding (tests/sotalign/test_ot_blockwise.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sotalign.checks import InputError, check_positive
from sotalign.ot import (
    HalfSteps,
    TooManyUnderflows,
    check_iterations,
    exp_,
    is_plain,
    kernel_ops,
    mass_scale,
    potentials,
    solver_dtype,
    stabilise_,
    with_gradients,
)

BLOCK_BYTES = 1 << 22  # 4 MiB of float32 per row block (256 rows at m = 4k): small temporaries ...
# ... but never fewer rows than this: the gradient loop's matrix products on thinner blocks run 1.1-1.6x slower
# (m = 22k, d = 1024, 2 CPU cores: 61 / 89 / 159 GFLOP/s at 47 rows against 96 / 164 / 180 at 256 for the
# teacher's logits, G Y and the addmm of G^T X), and at the paper's m a block of 256 rows is still 1% of a kernel
MIN_BLOCK_ROWS = 256
# a row or column recomputed from the embeddings costs a d-long dot product per entry: beyond 1 in 128 of
# them per half-step, a float64 kernel (twice the bytes per iteration) costs less (about n * 4 B * FLOP/s /
# (bandwidth * 2 d) rows at d = 1024 on a CPU)
MAX_EXACT_SHARE = 1 / 128


def rows_per_block(m: int, block_rows: int | None = None) -> int:
    """Rows per block: ``block_rows`` if given, else as many as fit in ``BLOCK_BYTES`` of float32, at least
    ``MIN_BLOCK_ROWS``."""
    if block_rows is not None and block_rows < 1:
        raise InputError(f"block_rows must be >= 1, got {block_rows}")
    return block_rows or max(MIN_BLOCK_ROWS, BLOCK_BYTES // (4 * m))


def _blocks(n: int, rows: int) -> list[slice]:
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _blockwise_lse_ops(logits: torch.Tensor, rows: int):
    """Log-sum-exp half-steps over row blocks (no n x m temporary); columns by online log-add-exp."""
    blocks = _blocks(logits.shape[0], rows)

    def lse_rows(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.logsumexp(logits[b] + v[None, :], dim=1) for b in blocks])

    def lse_cols(u: torch.Tensor) -> torch.Tensor:
        total = torch.full_like(logits[0], -torch.inf)
        for b in blocks:
            total = torch.logaddexp(total, torch.logsumexp(logits[b] + u[b, None], dim=0))
        return total

    return HalfSteps(lse_rows, lse_cols)


def _wide_ops(logits: torch.Tensor, rows: int):
    """Half-steps for logits whose sums underflow the kernel's own type: a float64 kernel copied block by
    block, or beyond float64's range the blockwise log-sum-exp."""
    row_max = logits.amax(dim=1)
    if not is_plain(float(row_max.max() - logits.amin()), torch.float64) or logits.device.type == "mps":
        return _blockwise_lse_ops(logits, rows)
    row_max = row_max.double()
    kernel = torch.empty(logits.shape, dtype=torch.float64, device=logits.device)
    for b in _blocks(logits.shape[0], rows):
        kernel[b] = (logits[b].double() - row_max[b, None]).exp()
    return kernel_ops(kernel, row_max, torch.zeros_like(logits[0], dtype=torch.float64), logits.dtype)


def _exact_sums(x: torch.Tensor, y: torch.Tensor, epsilon: float, rows: int):
    """(rows(index, v), cols(index, u)): exact log-sum-exps of the given rows / columns of X Y^T / eps,
    recomputed from the embeddings in chunks of at most ``rows`` x max(n, m) entries."""

    def chunks(index: torch.Tensor, length: int) -> list[torch.Tensor]:
        return list(index.split(max(1, rows * x.shape[0] // length)))

    def lse_rows(index: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [torch.logsumexp(_logits(x[c], y, epsilon) + v[None, :], 1) for c in chunks(index, x.shape[0])]
        )

    def lse_cols(index: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [torch.logsumexp(_logits(x, y[c], epsilon) + u[:, None], 0) for c in chunks(index, y.shape[0])]
        )

    return lse_rows, lse_cols


def _logits(x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    return (x @ y.T).div_(epsilon)


@dataclass
class _Solved:
    """A solve's potentials and iterations; ``kernel`` = exp(L - r - c) (``sotalign.ot.stabilise_``) when
    kept and exact (plain), with its r and c."""

    u: torch.Tensor
    v: torch.Tensor
    iterations: int
    kernel: torch.Tensor | None = None
    row_max: torch.Tensor | None = None
    col_max: torch.Tensor | None = None

    def log_plan(self, x: torch.Tensor, y: torch.Tensor, epsilon: float, rows: slice) -> torch.Tensor:
        """Rows ``rows`` of the log-plan: from the kept kernel (no matmul), else from the embeddings."""
        if self.kernel is not None:
            row, col = self.row_max[rows] + self.u[rows], self.col_max + self.v
            return self.kernel[rows].log().add_(row[:, None]).add_(col[None, :])
        return _logits(x[rows], y, epsilon).add_(self.u[rows, None]).add_(self.v[None, :])


def _solve(x, y, epsilon: float, n_iter: int, *, tol, symmetric, block_rows, check_every=10, keep_kernel=False):
    """Sinkhorn on the logits X Y^T / eps with one n x m buffer (see the module docstring)."""
    check_iterations(epsilon, n_iter)
    rows = rows_per_block(y.shape[0], block_rows)
    with torch.no_grad():
        dtype = solver_dtype(x)
        x, y = x.to(dtype), y.to(dtype)
        logits = _logits(x, y, epsilon)
        shape, like = logits.shape, logits.new_zeros(())
        run = lambda ops: potentials(ops, shape, like, n_iter, tol, symmetric, check_every)  # noqa: E731
        kernel, row_max, col_max, plain = stabilise_(logits)  # in the logits' place
        del logits
        try:
            u, v, iterations = run(
                kernel_ops(
                    kernel,
                    row_max,
                    col_max,
                    dtype,
                    None if plain else _exact_sums(x, y, epsilon, rows),
                    MAX_EXACT_SHARE,
                )
            )
        except TooManyUnderflows:
            del kernel
            return _Solved(*run(_wide_ops(_logits(x, y, epsilon), rows)))
        if keep_kernel and plain:
            return _Solved(u, v, iterations, kernel, row_max, col_max)
        return _Solved(u, v, iterations)


def sinkhorn_potentials(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    n_iter: int,
    *,
    tol: float | None = None,
    symmetric: bool = True,
    check_every: int = 10,
    block_rows: int | None = None,
):
    """Potentials (u, v) and iterations of ``sinkhorn(x @ y.T, epsilon, ...)``, one n x m matrix at a time.

    The plan is exp(x_i . y_j / epsilon + u_i + v_j); nothing n x m outlives the call.
    """
    solved = _solve(x, y, epsilon, n_iter, tol=tol, symmetric=symmetric, check_every=check_every, block_rows=block_rows)
    return solved.u, solved.v, solved.iterations


@dataclass
class TeacherPlan:
    """What KLOT needs of the teacher's plan Q, kept by ``TeacherPlanCache`` between calls: Q itself
    (n x m), sum Q log Q, sum Q, its row and column sums, and the iterations of its solve."""

    plan: torch.Tensor
    q_log_q: torch.Tensor
    total: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    iterations: int


class TeacherPlanCache:
    """The teacher's solve for the last teacher embeddings seen, reused when they recur.

    When an unpaired batch covers the whole pool (``sotalign.stage2`` then takes it in the pool's
    order: every unpaired sample in every step), the teacher's affinity, and so its plan, is the same
    at every step: one solve then serves the whole run. At the first recurrence the cache also builds
    the plan itself (one n x m matrix in the embeddings' type), so that from then on a step does no
    teacher work at all; batches that never recur cost nothing beyond their potentials. Keyed on the
    embeddings themselves (an exact comparison), so it is never stale.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._value: _Solved | TeacherPlan | None = None
        self.solves = 0

    def lookup(self, x: torch.Tensor, y: torch.Tensor, epsilon: float, n_iter: int, **options):
        """The teacher's ``TeacherPlan`` where these embeddings were seen last time, else its new solve."""
        key = (x, y, epsilon, n_iter, options)
        if self._key is not None and self._same(key):
            if isinstance(self._value, _Solved):
                self._value = _plan_of(self._value, x, y, epsilon, options.get("block_rows"))
            return self._value
        self._key, self._value = None, None  # the last plan's memory is free for the new solve
        self._value = _solve(x, y, epsilon, n_iter, **options)
        self._key = key
        self.solves += 1
        return self._value

    def _same(self, key: tuple) -> bool:
        (x, y, *rest), (kx, ky, *krest) = key, self._key
        return (
            rest == krest and x.shape == kx.shape and y.shape == ky.shape and torch.equal(x, kx) and torch.equal(y, ky)
        )


def _plan_of(solved: _Solved, x: torch.Tensor, y: torch.Tensor, epsilon: float, block_rows: int | None) -> TeacherPlan:
    """The plan of a solve and what KLOT reads of it, built block by block."""
    q, q_log_q = torch.empty(x.shape[0], y.shape[0], dtype=solved.u.dtype, device=x.device), 0.0
    for b in _blocks(x.shape[0], rows_per_block(y.shape[0], block_rows)):
        log_q = solved.log_plan(x, y, epsilon, b)
        exp_(q[b].copy_(log_q))  # in its own rows of Q: no temporary
        q_log_q += torch.dot(q[b].flatten(), log_q.flatten())
    return TeacherPlan(q, q_log_q, q.sum(), q.sum(1), q.sum(0), solved.iterations)


def klot_blockwise(
    student_images: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_images: torch.Tensor,
    teacher_texts: torch.Tensor,
    eps_student: float = 0.05,  # paper App. A.1 (joint space)
    eps_teacher: float = 0.01,  # paper App. A.1 (the released code defaults to 0.005)
    n_iter: int = 100,  # paper App. A.1
    mass: str = "unit",  # official code: plans of total mass 1 (paper.md 3.5)
    *,
    tol: float | None = None,
    symmetric: bool = True,
    block_rows: int | None = None,
    teacher_cache: TeacherPlanCache | None = None,
):
    """``klot(Xs @ Ys.T, Xt @ Yt.T, ...)`` from the embeddings, with its diagnostics: one n x m matrix (a
    solve's kernel) and O((n + m) d + block x m) beyond the inputs.

    Differentiable w.r.t. the student's embeddings (explicit gradient); the teacher's are a
    fixed target. Returns ``(value, diagnostics)`` like ``klot(..., return_diagnostics=True)``.
    A ``teacher_cache`` does no teacher work when its embeddings are those of the last call.
    """
    if student_images.ndim != 2 or student_texts.ndim != 2 or student_images.shape[1] != student_texts.shape[1]:
        raise InputError(
            f"student embeddings must be n x d and m x d, got {tuple(student_images.shape)} and {tuple(student_texts.shape)}"
        )
    if teacher_images.shape[0] != student_images.shape[0] or teacher_texts.shape[0] != student_texts.shape[0]:
        raise InputError(
            f"teacher and student embeddings must have the same rows, got {teacher_images.shape[0]} x {teacher_texts.shape[0]} "
            f"(teacher) and {student_images.shape[0]} x {student_texts.shape[0]} (student)"
        )
    check_positive(eps_student, "eps_student")
    check_positive(eps_teacher, "eps_teacher")
    n, m = student_images.shape[0], student_texts.shape[0]
    scale = mass_scale(mass, n)
    options = dict(tol=tol, symmetric=symmetric, block_rows=block_rows)
    dtype = solver_dtype(student_images)
    with torch.no_grad():
        xs, ys = student_images.detach().to(dtype), student_texts.detach().to(dtype)
        xt, yt = teacher_images.detach().to(dtype), teacher_texts.detach().to(dtype)
        # the teacher first, so that its kernel is freed before the student's is built; a cache's plan: no work
        looked_up = (teacher_cache.lookup if teacher_cache is not None else _solve)(
            xt, yt, eps_teacher, n_iter, **options
        )
        cached, teacher = (looked_up, None) if isinstance(looked_up, TeacherPlan) else (None, looked_up)
        iters_t = looked_up.iterations
        student = _solve(xs, ys, eps_student, n_iter, **options, keep_kernel=True)
        iters_s = student.iterations
        value = xs.new_zeros(())
        grad_x, grad_y = torch.empty_like(xs), torch.zeros_like(ys)
        student_rows, student_cols = xs.new_empty(n), xs.new_zeros(m)
        teacher_rows, teacher_cols = (cached.rows, cached.cols) if cached else (xs.new_empty(n), xs.new_zeros(m))
        for b in _blocks(n, rows_per_block(m, block_rows)):
            log_p = student.log_plan(xs, ys, eps_student, b)
            if cached is not None:
                q = cached.plan[b]
                value -= torch.dot(q.flatten(), log_p.flatten())  # sum Q log Q - sum Q: added once, below
            else:
                log_q = teacher.log_plan(xt, yt, eps_teacher, b)
                q = exp_(log_q.clone())
                teacher_rows[b] = q.sum(1)
                teacher_cols += q.sum(0)
                value += torch.dot(q.flatten(), log_q.sub_(log_p).flatten()) - teacher_rows[b].sum()
                del log_q
            p = exp_(log_p)
            student_rows[b] = p.sum(1)
            student_cols += p.sum(0)
            value += student_rows[b].sum()
            grad = p.sub_(q).mul_(scale / eps_student)
            grad_x[b] = grad @ ys
            grad_y.addmm_(grad.T, xs[b])  # no m x d temporary
        if cached is not None:
            value += cached.q_log_q - cached.total
        del student
    out = with_gradients((scale * value).to(student_images.dtype), (student_images, student_texts), (grad_x, grad_y))

    def marginal_error(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (rows - 1.0 / n).abs().sum() + (cols - 1.0 / m).abs().sum()

    return out, {
        "sinkhorn/student_marginal_err": marginal_error(student_rows, student_cols),
        "sinkhorn/teacher_marginal_err": marginal_error(teacher_rows, teacher_cols),
        "sinkhorn/student_iters": iters_s,
        "sinkhorn/teacher_iters": iters_t,
    }
