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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from sotalign.checks import InputError, check_choice, check_positive
from sotalign.matvec import OnePass, kernel_times, lend_threads, splits, threads_back, times_kernel

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
# (the potentials' own range is at most R), so where R and a ~25-nat precision margin fit in the
# dtype no sum can lose its leading terms: the kernel is used as it is ("plain"). Beyond it (a small
# teacher epsilon: R = 180 at eps = 0.01 on cosines) the kernel stays in the same dtype, and each
# half-step checks its sums ("guarded"): a sum below TINY_SUM may have lost its leading terms to
# underflow and is recomputed exactly, as a log-sum-exp of its row or column. Every term lost
# elsewhere is below the dtype's smallest normal number, so a sum kept is exact to m * 1.2e-38 / 1e-25,
# 1e-8 relative at m = 1e5 (float32; tests/sotalign/test_ot.py compares plans with float64's).
_MATVEC_BUDGET = {torch.float32: 60.0, torch.float64: 650.0}
TINY_SUM = {torch.float32: 1e-25, torch.float64: 1e-280}
# beyond this share of a half-step's rows (or columns) recomputed exactly, a guarded solve would cost more
# than another form: it stops (TooManyUnderflows) and the caller solves another way. A row recomputed from
# the logits costs m exponentials, about 1/8 of what the log-sum-exp form pays per row
MAX_EXACT_SHARE = 0.125


# below these exponents exp() is set to 0: just above each type's smallest normal number (e^-87.3, e^-708.4),
# so that nothing kept is a subnormal, and a term lost this way is one the guard already counts as lost (above)
EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}


def exp_(x: torch.Tensor) -> torch.Tensor:
    """In place ``x.exp_()``, with what falls below ``e^EXP_FLOOR`` (just above the smallest normal number) set
    to 0, as fast whatever the range of ``x``.

    On a CPU, torch's exp of float32 inputs beyond its underflow point runs 8-25x slower than of others,
    and a teacher's kernel or plan at eps* = 0.01 has a third of its entries there. Clamping first and
    zeroing what was clamped costs two light passes: 64M entries spread over [-180, 0] took 0.46-0.48 s with
    torch's exp and 0.06-0.09 s with this one (5-9x in three runs), over [-80, 0] 0.05 s and 0.07 s
    (AVX-512, 2 threads; ``python -m benchmarks.run --suites sinkhorn``). So plain kernels take torch's own.
    Off the CPU (not measured there) and under autograd (an unrolled solve) it is torch's exp.
    """
    floor = EXP_FLOOR.get(x.dtype)
    if floor is None or x.device.type != "cpu" or x.requires_grad:
        return x.exp_()
    # what was clamped becomes exp(floor) (within an ulp): anything at most 1e-5 relative above it goes to 0
    return torch.threshold_(x.clamp_(min=floor).exp_(), math.exp(floor + 1e-5), 0.0)


class HalfSteps(NamedTuple):
    """A Sinkhorn iteration's half-steps over the n x m logits L: ``rows(v)_i = log sum_j exp(L_ij + v_j)``
    and ``cols(u)`` its transpose; optionally ``iterate(v, log_a)``, the same as (rows(v), cols(log_a -
    rows(v))) in one pass over a kernel (``kernel_ops``)."""

    rows: Callable[[torch.Tensor], torch.Tensor]
    cols: Callable[[torch.Tensor], torch.Tensor]
    iterate: Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]] | None = None


class TooManyUnderflows(Exception):
    """A guarded matvec half-step found too many sums to recompute exactly (see ``MAX_EXACT_SHARE``)."""


def _logsumexp_ops(logits: torch.Tensor):
    """Half-steps as log-sum-exp over the n x m logits (the reference's form)."""
    return HalfSteps(
        lambda v: torch.logsumexp(logits + v[None, :], dim=1),
        lambda u: torch.logsumexp(logits + u[:, None], dim=0),
    )


def is_plain(logit_range: float, dtype: torch.dtype) -> bool:
    """True where the matvec kernel of logits of this range cannot lose a leading term to underflow."""
    return logit_range <= _MATVEC_BUDGET[dtype]


def _matvec_ops(logits: torch.Tensor):
    """The same half-steps as matrix-vector products with one kernel stabilised on both sides.

    E = exp(L - r - c) with r the row maxima of L and c the column maxima of L - r, so that every row
    and every column of E holds a 1; then
    lse_j(L_ij + v_j) = r_i + M + log (E exp(v + c - M))_i with M = max(v + c), and
    lse_i(L_ij + u_i) = c_j + M' + log (E^T exp(u + r - M'))_j with M' = max(u + r).
    Guarded (see ``TINY_SUM``) where the logits' range needs it.
    """
    row_max = logits.amax(dim=1)
    guarded = not is_plain(float((row_max.max() - logits.amin()).detach()), logits.dtype)
    shifted = logits - row_max[:, None]
    col_max = shifted.amax(dim=0)
    exact = (
        (
            lambda rows, v: torch.logsumexp(logits[rows] + v[None, :], dim=1),
            lambda cols, u: torch.logsumexp(logits[:, cols] + u[:, None], dim=0),
        )
        if guarded
        else None
    )
    return kernel_ops(exp_(shifted - col_max[None, :]), row_max, col_max, logits.dtype, exact, MAX_EXACT_SHARE)


def stabilise_(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """In place: the logits L become the kernel E = exp(L - r - c) of ``_matvec_ops``. Returns
    (E, r, c, plain): ``plain`` where no sum of E can lose a leading term (``is_plain``)."""
    row_max = logits.amax(dim=1)
    plain = is_plain(float(row_max.max() - logits.amin()), logits.dtype)
    logits.sub_(row_max[:, None])
    col_max = logits.amax(dim=0)
    logits.sub_(col_max[None, :])
    return (logits.exp_() if plain else exp_(logits)), row_max, col_max, plain  # plain: nothing near underflow


def kernel_ops(
    kernel: torch.Tensor,
    row_max: torch.Tensor,
    col_max: torch.Tensor,
    out_dtype: torch.dtype,
    exact=None,
    max_exact_share: float = MAX_EXACT_SHARE,
) -> HalfSteps:
    """Matvec half-steps (see ``_matvec_ops``) on a given kernel E = exp(L - r - c), its r and c.

    ``exact``: ``(rows(index, v), cols(index, u))``, the exact log-sum-exp of the given rows of L + v
    and columns of L + u, for the sums that may have underflowed (guarded); None where none can; more
    than ``max_exact_share`` of them in one half-step raise ``TooManyUnderflows``.
    """
    tiny = TINY_SUM[kernel.dtype]

    def rows(v: torch.Tensor) -> torch.Tensor:
        v = v.to(kernel.dtype)
        with lend_threads(kernel):
            shifted = v + col_max
            top = shifted.max()
            sums = kernel_times(kernel, (shifted - top).exp())
            out = row_max + top + sums.log()
        if exact is not None:
            out = _repaired(out, sums, tiny, lambda index: exact[0](index, v), max_exact_share)
        return out.to(out_dtype)

    def cols(u: torch.Tensor) -> torch.Tensor:
        with lend_threads(kernel):
            shifted = u.to(kernel.dtype) + row_max
            top = shifted.max()
            sums = times_kernel((shifted - top).exp(), kernel)
            out = col_max + top + sums.log()
        if exact is not None:
            out = _repaired(out, sums, tiny, lambda index: exact[1](index, u.to(kernel.dtype)), max_exact_share)
        return out.to(out_dtype)

    # a guarded sum below tiny gets weight 0 in the pass and its exact weight after it (1 / s could overflow)
    one_pass = OnePass(kernel, 0.0 if exact is None else tiny) if splits(kernel) else None

    def exact_on_all_threads(side: int, potential: torch.Tensor):
        def recompute(index: torch.Tensor) -> torch.Tensor:
            with threads_back():
                return exact[side](index, potential)

        return recompute

    def iterate(v: torch.Tensor, log_a: float) -> tuple[torch.Tensor, torch.Tensor]:
        # with s = E exp(v + c - M) the row sums: rows(v) = r + M + log s, and u = log_a - rows(v) gives
        # exp(u + r) = exp(log_a - M) / s, so the column sums weigh the rows by z = 1 / s (times a constant).
        # All of it on the lent threads: an op on more threads leaves OpenMP's workers spinning on the cores
        # the next pass needs (guarded, n = 4096: 6.2-6.4 ms per pass against 4.4-4.6)
        v = v.to(kernel.dtype)
        with lend_threads(kernel):
            shifted = v + col_max
            top = shifted.max()
            weights = (shifted - top).exp()
            sums, col_sums = one_pass(weights)
            lse_rows = row_max + top + sums.log()
            if exact is None:  # plain: s >= e^-60 (E >= e^-60, the heaviest weight is 1), so 1 / s cannot overflow
                return lse_rows.to(out_dtype), (col_max + (log_a - top) + col_sums.log()).to(out_dtype)
            lse_rows = _repaired(lse_rows, sums, tiny, exact_on_all_threads(0, v), max_exact_share)
            log_weights = row_max + top - lse_rows  # -log s, exact where s was repaired
            heaviest = log_weights.max()
            # the weights relative to the heaviest, as ``cols`` has them: scaled in the log domain and float64, since
            # e^-heaviest alone can be subnormal (float32 beyond 87 nats, float64 beyond 708)
            col_sums = col_sums.double().log_().sub_(heaviest.double()).exp_()
            repaired = (sums < tiny).nonzero().squeeze(1)
            if repaired.numel():  # their exact weights, on their rows of the kernel (as ``cols`` reads them)
                col_sums.add_(torch.mv(kernel[repaired].T, (log_weights[repaired] - heaviest).exp()).double())
            u = log_a - lse_rows
            lse_cols = col_max + (log_a - top + heaviest) + col_sums.log().to(kernel.dtype)
            lse_cols = _repaired(lse_cols, col_sums, tiny, exact_on_all_threads(1, u), max_exact_share)
            return lse_rows.to(out_dtype), lse_cols.to(out_dtype)

    return HalfSteps(rows, cols, iterate if one_pass is not None else None)


def _repaired(out: torch.Tensor, sums: torch.Tensor, tiny: float, exact, share: float) -> torch.Tensor:
    """``out`` with the entries whose ``sums`` fell below ``tiny`` recomputed by ``exact(index)``; more
    than ``share`` of them raise ``TooManyUnderflows``."""
    index = (sums < tiny).nonzero().squeeze(1)  # one host sync per half-step, on the guarded path only
    if index.numel() == 0:
        return out
    if index.numel() > share * sums.numel():
        raise TooManyUnderflows(f"{index.numel()} of {sums.numel()} sums underflowed")
    return out.index_copy(0, index, exact(index).to(out.dtype))


def _refused_matvec(why: TooManyUnderflows) -> InputError:
    """What an explicit ``solver="matvec"`` says where its guarded sums underflow too often."""
    return InputError(f"the matvec Sinkhorn underflows here ({why}); use 'auto' or 'logsumexp'")


def _half_step_ops(logits: torch.Tensor, solver: str):
    check_choice(solver, SOLVERS, "sinkhorn solver")
    return _logsumexp_ops(logits) if solver == "logsumexp" else _matvec_ops(logits)


def check_iterations(epsilon: float, n_iter: int) -> None:
    """A Sinkhorn solve needs epsilon > 0 and at least one iteration."""
    check_positive(epsilon, "epsilon")
    if n_iter < 1:
        raise InputError(f"n_iter must be >= 1, got {n_iter}")


def potentials(
    ops: HalfSteps,
    shape: tuple[int, int],
    like: torch.Tensor,
    n_iter: int,
    tol: float | None,
    symmetric: bool,
    check_every: int,
):
    """The Sinkhorn iteration on given half-steps (``HalfSteps``): potentials (u, v) and the iterations
    run; the potentials take ``like``'s dtype and device."""
    n, m = shape
    log_a, log_b = -math.log(n), -math.log(m)
    u = like.new_zeros(n)
    v = like.new_zeros(m)
    iterations = 0
    for iterations in range(1, n_iter + 1):
        if ops.iterate is not None:
            lse_rows, lse_cols = ops.iterate(v, log_a)
            u, v = log_a - lse_rows, log_b - lse_cols
        else:
            u = log_a - ops.rows(v)
            v = log_b - ops.cols(u)
        if tol is not None and iterations % check_every == 0:
            row_mass = (u + ops.rows(v)).exp()
            if (row_mass - 1.0 / n).abs().sum() < tol:
                break
    if symmetric:
        u_extra = log_a - ops.rows(v)
        v_extra = log_b - ops.cols(u)
        u, v = 0.5 * (u + u_extra), 0.5 * (v + v_extra)
    return u, v, iterations


def sinkhorn(
    K: torch.Tensor,
    epsilon: float,
    n_iter: int = 100,  # paper App. A.1: 100 iterations in both spaces
    tol: float | None = None,  # reference default: no convergence check
    symmetric: bool = True,  # reference default: final symmetric half-step
    check_every: int = 10,  # how often the tolerance is tested (each test is one host sync)
    solver: str = "auto",  # "auto" = matvec (guarded where it could underflow), logsumexp if that fails
) -> SinkhornResult:
    """Entropic OT plan of the affinity matrix ``K`` (n x m, cost = -K) at temperature ``epsilon``.

    With ``tol`` set, the row-marginal L1 error is computed on the device every
    ``check_every`` iterations and the loop stops once it is below ``tol``. Both solvers
    run the identical iteration; ``matvec`` is several times faster (one exp of the kernel
    instead of one per half-step); ``auto`` takes it, and log-sum-exp only where more than
    ``MAX_EXACT_SHARE`` of a half-step's sums underflow in it.
    """
    if K.ndim != 2 or min(K.shape) == 0:
        raise InputError(f"sinkhorn expects a non-empty 2-D affinity matrix, got shape {tuple(K.shape)}")
    check_iterations(epsilon, n_iter)
    logits = K.to(solver_dtype(K)) / epsilon
    try:
        u, v, iterations = potentials(
            _half_step_ops(logits, solver), logits.shape, logits, n_iter, tol, symmetric, check_every
        )
    except TooManyUnderflows as why:
        if solver == "matvec":
            raise _refused_matvec(why) from None
        u, v, iterations = potentials(_logsumexp_ops(logits), logits.shape, logits, n_iter, tol, symmetric, check_every)
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
        # handed over, scaled in place: no second copy of an n x m (dense) or n x d gradient. A second
        # backward through the same value (retain_graph) is refused by autograd's in-place check.
        grads = tuple(grad.mul_(grad_output) for grad in ctx.saved_tensors)
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
    options = dict(n_iter=n_iter, tol=tol, symmetric=symmetric, solver=solver)
    with torch.no_grad():
        dtype = solver_dtype(K_student)
        u_t, v_t, iters_t = _potentials(K_teacher.detach(), eps_teacher, **options)
        u_s, v_s, iters_s = _potentials(K_student.detach(), eps_student, **options)
        # three n x m buffers from here on (the solves above held one each, and freed it)
        log_q = _log_plan(K_teacher.detach(), eps_teacher, u_t, v_t).to(dtype)
        log_p = _log_plan(K_student.detach(), eps_student, u_s, v_s)
        q = exp_(log_q.clone())
        cross = torch.dot(q.flatten(), log_q.sub_(log_p).flatten())  # sum Q (log Q - log P), no temporary
        p = exp_(log_p)
        value = scale * (cross - q.sum() + p.sum())
        errors = {"student": _sums_error(p), "teacher": _sums_error(q)}
        grad = p.sub_(q).mul_(scale / eps_student)  # (P - Q) / eps_student, in P's buffer
        del q, log_q
    out = with_gradients(value.to(K_student.dtype), (K_student,), (grad,))
    if not return_diagnostics:
        return out
    return out, {
        "sinkhorn/student_marginal_err": errors["student"],
        "sinkhorn/teacher_marginal_err": errors["teacher"],
        "sinkhorn/student_iters": iters_s,
        "sinkhorn/teacher_iters": iters_t,
    }


def _log_plan(K: torch.Tensor, epsilon: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return K.to(u.dtype).div(epsilon).add_(u[:, None]).add_(v[None, :])


def _sums_error(plan: torch.Tensor) -> torch.Tensor:
    n, m = plan.shape
    return (plan.sum(1) - 1.0 / n).abs().sum() + (plan.sum(0) - 1.0 / m).abs().sum()


def _potentials(K: torch.Tensor, epsilon: float, n_iter: int, tol, symmetric: bool, solver: str):
    """``sinkhorn``'s potentials (u, v) and iterations holding one n x m buffer: the matvec kernel is
    built in the logits' place, and a guarded half-step recomputes its rows or columns from ``K``."""
    check_iterations(epsilon, n_iter)
    check_choice(solver, SOLVERS, "sinkhorn solver")
    dtype = solver_dtype(K)
    logits = K.to(dtype) / epsilon
    run = lambda ops: potentials(ops, logits.shape, logits.new_zeros(()), n_iter, tol, symmetric, 10)  # noqa: E731
    if solver == "logsumexp":
        return run(_logsumexp_ops(logits))
    exact = (
        lambda rows, v: torch.logsumexp(K[rows].to(dtype) / epsilon + v[None, :], dim=1),
        lambda cols, u: torch.logsumexp(K[:, cols].to(dtype) / epsilon + u[:, None], dim=0),
    )
    kernel, row_max, col_max, plain = stabilise_(logits)  # in the logits' place
    try:
        return run(kernel_ops(kernel, row_max, col_max, dtype, None if plain else exact))
    except TooManyUnderflows as why:
        if solver == "matvec":
            raise _refused_matvec(why) from None
        del kernel
        logits = K.to(dtype) / epsilon
        return run(_logsumexp_ops(logits))
