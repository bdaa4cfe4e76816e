"""KLOT without n x m plans: Sinkhorn and the explicit gradient computed from the embeddings.

Dense ``sotalign.ot.klot`` takes the two affinity matrices and holds about ten n x m matrices
(affinities, logits, kernels, log-plans, plans, the gradient). With K = X Y^T given by its
factors, ``klot_blockwise`` needs far less, so that the paper's batch (10k pairs + 22k
unpaired, paper App. A.1) fits in memory:

* each Sinkhorn solve holds one n x m matrix, and only while it runs: the logits X Y^T / eps,
  turned into the matvec kernel exp(L - r) in place (float32), copied block by block into a
  float64 kernel when float32 would underflow (a small teacher epsilon), or iterated over in
  row blocks with an online log-sum-exp when even float64 would underflow. Afterwards only
  the potentials (u, v) remain, so the student's and the teacher's kernels never coexist;
* the value KL(P* || P) and the explicit gradient (P - P*) / eps (Theorem 5.1) are then summed
  over row blocks whose logits are recomputed from the embeddings: with G the gradient block,
  dX = G Y and dY += G^T X, so neither the plans nor the n x m gradient is ever formed.

It runs the very iteration of ``sotalign.ot.sinkhorn`` (the same half-steps, solver choice and
symmetric half-step), so it equals dense KLOT up to float rounding (tests/sotalign/test_ot_blockwise.py).
"""

from __future__ import annotations

import torch

from sotalign.checks import InputError, check_positive
from sotalign.ot import check_iterations, kernel_ops, mass_scale, matvec_dtype, potentials, solver_dtype, with_gradients

BLOCK_BYTES = (
    1 << 24
)  # 16 MiB of float32 logits per row block (128 rows at m = 32k): still large matmuls, small temporaries


def rows_per_block(m: int, block_rows: int | None = None) -> int:
    """Rows per block: ``block_rows`` if given, else as many as fit in ``BLOCK_BYTES`` of float32."""
    if block_rows is not None and block_rows < 1:
        raise InputError(f"block_rows must be >= 1, got {block_rows}")
    return block_rows or max(1, BLOCK_BYTES // (4 * m))


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

    return lse_rows, lse_cols


def _low_memory_ops(logits: torch.Tensor, rows: int):
    """Half-steps that reuse ``logits``' own memory for the kernel whenever float32 allows it.

    Takes ownership of ``logits`` (it is overwritten in place on the float32 path).
    """
    row_max = logits.amax(dim=1)
    dtype = matvec_dtype(float(row_max.max() - logits.amin()), logits)
    if dtype == logits.dtype:
        return kernel_ops(row_max, logits.sub_(row_max[:, None]).exp_(), logits.dtype)
    if dtype is not None:
        row_max = row_max.to(dtype)
        kernel = torch.empty(logits.shape, dtype=dtype, device=logits.device)
        for b in _blocks(logits.shape[0], rows):
            kernel[b] = (logits[b].to(dtype) - row_max[b, None]).exp()
        return kernel_ops(row_max, kernel, logits.dtype)
    return _blockwise_lse_ops(logits, rows)


def _logits(x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    return (x @ y.T).div_(epsilon)


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
    check_iterations(epsilon, n_iter)
    with torch.no_grad():
        logits = _logits(x.to(solver_dtype(x)), y.to(solver_dtype(x)), epsilon)
        shape, like = logits.shape, logits.new_zeros(())
        ops = _low_memory_ops(logits, rows_per_block(y.shape[0], block_rows))
        del logits  # the float64 and the blockwise paths no longer need it; the float32 one holds it as its kernel
        return potentials(*ops, shape, like, n_iter, tol, symmetric, check_every)


class TeacherPlanCache:
    """The teacher's Sinkhorn potentials for the last teacher embeddings seen, reused when they recur.

    When an unpaired batch covers the whole pool (``sotalign.stage2`` then takes it in the pool's
    order, as at the paper's sizes: every unpaired sample in every step), the teacher's affinity,
    and so its plan, is the same at every step: one solve then serves the whole run. Keyed on the
    embeddings themselves (an exact comparison), so it is never stale.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._value: tuple | None = None
        self.solves = 0

    def potentials(self, x: torch.Tensor, y: torch.Tensor, epsilon: float, n_iter: int, **options):
        key = (x, y, epsilon, n_iter, options)
        if self._key is None or not self._same(key):
            self._key, self._value = key, sinkhorn_potentials(x, y, epsilon, n_iter, **options)
            self.solves += 1
        return self._value

    def _same(self, key: tuple) -> bool:
        (x, y, *rest), (kx, ky, *krest) = key, self._key
        return (
            rest == krest and x.shape == kx.shape and y.shape == ky.shape and torch.equal(x, kx) and torch.equal(y, ky)
        )


def _log_plan(x: torch.Tensor, y: torch.Tensor, epsilon: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _logits(x, y, epsilon).add_(u[:, None]).add_(v[None, :])


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
    """``klot(Xs @ Ys.T, Xt @ Yt.T, ...)`` from the embeddings, with its diagnostics, in O((n + m) d) extra memory.

    Differentiable w.r.t. the student's embeddings (explicit gradient); the teacher's are a
    fixed target. Returns ``(value, diagnostics)`` like ``klot(..., return_diagnostics=True)``.
    A ``teacher_cache`` skips the teacher's solve when its embeddings are those of the last call.
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
        u_s, v_s, iters_s = sinkhorn_potentials(xs, ys, eps_student, n_iter, **options)
        solve_teacher = teacher_cache.potentials if teacher_cache is not None else sinkhorn_potentials
        u_t, v_t, iters_t = solve_teacher(xt, yt, eps_teacher, n_iter, **options)
        value = xs.new_zeros(())
        grad_x, grad_y = torch.empty_like(xs), torch.zeros_like(ys)
        student_rows, teacher_rows = xs.new_empty(n), xs.new_empty(n)
        student_cols, teacher_cols = xs.new_zeros(m), xs.new_zeros(m)
        for b in _blocks(n, rows_per_block(m, block_rows)):
            log_p = _log_plan(xs[b], ys, eps_student, u_s[b], v_s)
            log_q = _log_plan(xt[b], yt, eps_teacher, u_t[b], v_t)
            p, q = log_p.exp(), log_q.exp()
            value += log_q.sub_(log_p).mul_(q).sum() - q.sum() + p.sum()
            student_rows[b], teacher_rows[b] = p.sum(1), q.sum(1)
            student_cols += p.sum(0)
            teacher_cols += q.sum(0)
            grad = p.sub_(q).mul_(scale / eps_student)
            grad_x[b] = grad @ ys
            grad_y += grad.T @ xs[b]
    out = with_gradients((scale * value).to(student_images.dtype), (student_images, student_texts), (grad_x, grad_y))

    def marginal_error(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (rows - 1.0 / n).abs().sum() + (cols - 1.0 / m).abs().sum()

    return out, {
        "sinkhorn/student_marginal_err": marginal_error(student_rows, student_cols),
        "sinkhorn/teacher_marginal_err": marginal_error(teacher_rows, teacher_cols),
        "sinkhorn/student_iters": iters_s,
        "sinkhorn/teacher_iters": iters_t,
    }
