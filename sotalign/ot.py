"""Entropic optimal transport on affinity matrices, and the KLOT divergence.

``sinkhorn`` solves ``OT_eps(K) = argmin_{P in Pi} -<P, K> + eps <P, log P>`` in the log domain
with uniform marginals, using the iteration of the reference implementation (paper.md 3.3):
potentials start at zero, u is updated before v for a fixed number of iterations, and an
optional final "symmetric" half-step averages each potential with one more update so that
both marginals hold approximately. Called on a tensor that requires grad (outside
``no_grad``), it is an ordinary differentiable unrolled solver; ``klot`` never does that.

``klot`` is KL(OT_eps_t(K_teacher) || OT_eps_s(K_student)) with the explicit gradient of
Theorem 5.1 / C.4: d KLOT / d K_student = (P_student - P_teacher) / eps_student. Both
plans are solved without autograd, so memory is a few n x m matrices whatever the number
of iterations. The value is computed from log-plans because at eps_t <= 0.01 a large part
of a float32 teacher plan underflows to exactly zero (docs/DESIGN.md, numerics of KLOT).

We write the solver ourselves rather than call POT: KLOT needs the reference's exact
non-converged iteration, log-plans and no host syncs in the loop (docs/notes/anchors.md section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from sotalign.checks import InputError, check_choice, check_positive

Mass = Literal["unit", "rows"]
MASSES = ("unit", "rows")


@dataclass(frozen=True)
class SinkhornResult:
    """A solved entropic OT problem.

    ``log_plan`` is the log of a plan of total mass 1 (marginals 1/n and 1/m).
    ``iterations`` counts the u/v iterations run (the symmetric half-step not included).
    ``marginal_error`` is ||P 1 - a||_1 + ||P^T 1 - b||_1, a 0-d tensor left on the device
    so that reading it is the caller's choice (it is a sync on a GPU).
    """

    log_plan: torch.Tensor
    iterations: int
    marginal_error: torch.Tensor

    @property
    def plan(self) -> torch.Tensor:
        return self.log_plan.exp()


def solver_dtype(K: torch.Tensor) -> torch.dtype:
    """Sinkhorn runs in float32 at least, even under autocast (docs/DESIGN.md)."""
    return K.dtype if K.dtype in (torch.float32, torch.float64) else torch.float32


def _marginal_error(log_plan: torch.Tensor) -> torch.Tensor:
    n, m = log_plan.shape
    plan = log_plan.exp()
    return (plan.sum(1) - 1.0 / n).abs().sum() + (plan.sum(0) - 1.0 / m).abs().sum()


SOLVERS = ("auto", "logsumexp", "matvec")
# exp() underflows below about e^-87 (float32) and e^-708 (float64). In the matvec solver the
# largest term of every row and column sum lies within R = range(K / eps) of the stabiliser
# (the potentials' own range is at most R), so R + a ~25-nat precision margin must fit.
_MATVEC_BUDGET = {torch.float32: 60.0, torch.float64: 650.0}


def _logsumexp_ops(logits: torch.Tensor):
    """Half-steps as log-sum-exp over the n x m logits (the reference's form)."""
    return (
        lambda v: torch.logsumexp(logits + v[None, :], dim=1),
        lambda u: torch.logsumexp(logits + u[:, None], dim=0),
    )


def _matvec_ops(logits: torch.Tensor, dtype: torch.dtype):
    """The same half-steps as matrix-vector products with one row-stabilised kernel.

    E = exp(L - r) with r the row maxima; then
    lse_j(L_ij + v_j) = r_i + max(v) + log (E exp(v - max v))_i and
    lse_i(L_ij + u_i) = M + log (E^T exp(u + r - M))_j with M = max(u + r).
    """
    row_max = logits.amax(dim=1).to(dtype)
    return kernel_ops(row_max, (logits.to(dtype) - row_max[:, None]).exp(), logits.dtype)


def kernel_ops(row_max: torch.Tensor, kernel: torch.Tensor, out_dtype: torch.dtype):
    """Matvec half-steps (see ``_matvec_ops``) on a given kernel E = exp(L - r) and its r."""

    def rows(v: torch.Tensor) -> torch.Tensor:
        v = v.to(kernel.dtype)
        v_max = v.max()
        return (row_max + v_max + (kernel @ (v - v_max).exp()).log()).to(out_dtype)

    def cols(u: torch.Tensor) -> torch.Tensor:
        shifted = u.to(kernel.dtype) + row_max
        top = shifted.max()
        return (top + ((shifted - top).exp() @ kernel).log()).to(out_dtype)

    return rows, cols


def matvec_dtype(logit_range: float, like: torch.Tensor) -> torch.dtype | None:
    """The narrowest float type in which the matvec kernel of logits of this range cannot underflow."""
    for dtype in (torch.float32, torch.float64):
        if logit_range <= _MATVEC_BUDGET[dtype] and (dtype != torch.float64 or like.device.type != "mps"):
            return torch.promote_types(dtype, like.dtype)
    return None


def _half_step_ops(logits: torch.Tensor, solver: str):
    check_choice(solver, SOLVERS, "sinkhorn solver")
    if solver == "logsumexp":
        return _logsumexp_ops(logits)
    need = float(logits.detach().max() - logits.detach().min())
    dtype = matvec_dtype(need, logits)
    if dtype is not None:
        return _matvec_ops(logits, dtype)
    if solver == "matvec":
        raise InputError(f"the matvec Sinkhorn would underflow here (range(K/eps) = {need:.0f}); use 'logsumexp'")
    return _logsumexp_ops(logits)


def check_iterations(epsilon: float, n_iter: int) -> None:
    """A Sinkhorn solve needs epsilon > 0 and at least one iteration."""
    check_positive(epsilon, "epsilon")
    if n_iter < 1:
        raise InputError(f"n_iter must be >= 1, got {n_iter}")


def potentials(
    lse_rows,
    lse_cols,
    shape: tuple[int, int],
    like: torch.Tensor,
    n_iter: int,
    tol: float | None,
    symmetric: bool,
    check_every: int,
):
    """The Sinkhorn iteration on given half-steps: potentials (u, v) and the iterations run.

    ``lse_rows(v)_i = log sum_j exp(L_ij + v_j)`` over the n x m logits L and ``lse_cols(u)`` its
    transpose; the potentials take ``like``'s dtype and device.
    """
    n, m = shape
    log_a, log_b = -math.log(n), -math.log(m)
    u = like.new_zeros(n)
    v = like.new_zeros(m)
    iterations = 0
    for iterations in range(1, n_iter + 1):
        u = log_a - lse_rows(v)
        v = log_b - lse_cols(u)
        if tol is not None and iterations % check_every == 0:
            row_mass = (u + lse_rows(v)).exp()
            if (row_mass - 1.0 / n).abs().sum() < tol:
                break
    if symmetric:
        u_extra = log_a - lse_rows(v)
        v_extra = log_b - lse_cols(u)
        u, v = 0.5 * (u + u_extra), 0.5 * (v + v_extra)
    return u, v, iterations


def sinkhorn(
    K: torch.Tensor,
    epsilon: float,
    n_iter: int = 100,  # paper App. A.1: 100 iterations in both spaces
    tol: float | None = None,  # reference default: no convergence check
    symmetric: bool = True,  # reference default: final symmetric half-step
    check_every: int = 10,  # how often the tolerance is tested (each test is one host sync)
    solver: str = "auto",  # "auto" = matvec when it cannot underflow, else logsumexp
) -> SinkhornResult:
    """Entropic OT plan of the affinity matrix ``K`` (n x m, cost = -K) at temperature ``epsilon``.

    With ``tol`` set, the row-marginal L1 error is computed on the device every
    ``check_every`` iterations and the loop stops once it is below ``tol``. Both solvers
    run the identical iteration; ``matvec`` is several times faster (one exp of the kernel
    instead of one per half-step) and is chosen whenever its float range is safe.
    """
    if K.ndim != 2 or min(K.shape) == 0:
        raise InputError(f"sinkhorn expects a non-empty 2-D affinity matrix, got shape {tuple(K.shape)}")
    check_iterations(epsilon, n_iter)
    logits = K.to(solver_dtype(K)) / epsilon
    u, v, iterations = potentials(
        *_half_step_ops(logits, solver), logits.shape, logits, n_iter, tol, symmetric, check_every
    )
    log_plan = logits + u[:, None] + v[None, :]
    return SinkhornResult(log_plan, iterations, _marginal_error(log_plan.detach()))


def plan_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Generalised KL(P || Q) = sum P (log P - log Q) - sum P + sum Q, from log-plans.

    The mass terms make it >= 0 even when Sinkhorn stopped before the plans had exactly
    equal mass; at convergence they cancel and this is the reference implementation's value.
    """
    p = log_p.exp()
    return (p * (log_p - log_q)).sum() - p.sum() + log_q.exp().sum()


class _ExplicitGradient(torch.autograd.Function):
    """A precomputed value whose gradients w.r.t. some inputs are precomputed tensors."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, *inputs_then_grads: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(*inputs_then_grads[len(inputs_then_grads) // 2 :])
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grads = tuple(grad_output * grad for grad in ctx.saved_tensors)
        return (None, *grads, *(None for _ in grads))


def with_gradients(
    value: torch.Tensor, inputs: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """``value`` (computed without autograd), differentiable w.r.t. ``inputs`` with gradients ``grads``."""
    return _ExplicitGradient.apply(value, *inputs, *(g.to(x.dtype) for x, g in zip(inputs, grads, strict=True)))


def mass_scale(mass: str, n_rows: int) -> float:
    """Total plan mass: 1 for ``unit`` (official code), n for ``rows`` (paper's Pi_n, rows sum to 1)."""
    check_choice(mass, MASSES, "KLOT mass")
    return 1.0 if mass == "unit" else float(n_rows)


def klot(
    K_student: torch.Tensor,
    K_teacher: torch.Tensor,
    eps_student: float = 0.05,  # paper App. A.1 (joint space)
    eps_teacher: float = 0.01,  # paper App. A.1 (the released code defaults to 0.005)
    n_iter: int = 100,  # paper App. A.1
    mass: Mass = "unit",  # official code: plans of total mass 1 (paper.md 3.5)
    *,
    tol: float | None = None,
    symmetric: bool = True,
    solver: str = "auto",
    return_diagnostics: bool = False,
):
    """KL(P_teacher || P_student) between the entropic OT plans of two n x m affinity matrices.

    Differentiable w.r.t. ``K_student`` only, with the explicit gradient
    (P_student - P_teacher) / eps_student (times n for ``mass="rows"``); ``K_teacher`` is a
    fixed target. With ``return_diagnostics`` returns ``(value, dict)`` where the dict
    holds Sinkhorn marginal errors (0-d tensors) and iteration counts under ``sinkhorn/``.
    """
    if K_student.shape != K_teacher.shape or K_student.ndim != 2:
        raise InputError(
            f"K_student and K_teacher must be n x m matrices of the same shape, "
            f"got {tuple(K_student.shape)} and {tuple(K_teacher.shape)}"
        )
    check_positive(eps_student, "eps_student")
    check_positive(eps_teacher, "eps_teacher")
    scale = mass_scale(mass, K_student.shape[0])
    with torch.no_grad():
        student = sinkhorn(K_student.detach(), eps_student, n_iter, tol=tol, symmetric=symmetric, solver=solver)
        teacher = sinkhorn(K_teacher.detach(), eps_teacher, n_iter, tol=tol, symmetric=symmetric, solver=solver)
        log_t = teacher.log_plan.to(student.log_plan.dtype)
        value = scale * plan_kl(log_t, student.log_plan)
        grad = (student.plan - log_t.exp()) * (scale / eps_student)
    out = with_gradients(value.to(K_student.dtype), (K_student,), (grad,))
    if not return_diagnostics:
        return out
    return out, {
        "sinkhorn/student_marginal_err": student.marginal_error,
        "sinkhorn/teacher_marginal_err": teacher.marginal_error,
        "sinkhorn/student_iters": student.iterations,
        "sinkhorn/teacher_iters": teacher.iterations,
    }
