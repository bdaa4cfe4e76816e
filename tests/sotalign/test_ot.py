"""Sinkhorn and KLOT against independent references: POT's log-domain solver, autograd
through an unrolled converged Sinkhorn, and central finite differences."""

import numpy as np
import ot as pot
import pytest
import torch
import torch.nn.functional as F

from sotalign import matvec
from sotalign.ot import EXP_FLOOR, exp_, kernel_ops, klot, plan_kl, potentials, sinkhorn, stabilise_


def cosine_affinity(n, m, dim=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=1)
    y = F.normalize(torch.randn(m, dim, generator=g, dtype=dtype), dim=1)
    return x @ y.T


@pytest.mark.parametrize("dtype,low", [(torch.float32, -200.0), (torch.float64, -800.0)])
def test_flushed_exp_equals_exp_above_its_floor_and_is_zero_below(dtype, low):
    """``exp_`` against float64's exp: within two ulps of it where the result is at least e^floor, 0 below
    it, and never a subnormal number."""
    x = torch.linspace(low, 0.0, 200_001, dtype=dtype)
    ours = exp_(x.clone())
    exact = torch.exp(x.to(torch.float64))
    floor = EXP_FLOOR[dtype]
    kept = x > floor + 1e-4
    gone = x < floor
    assert bool((ours[gone] == 0).all()) and int(gone.sum()) > 0
    relative = ((ours[kept].double() - exact[kept]) / exact[kept]).abs()
    assert float(relative.max()) <= 2 * torch.finfo(dtype).eps
    assert not bool(((ours > 0) & (ours < torch.finfo(dtype).tiny)).any())
    # under autograd it is torch's exp (differentiable, subnormals and all)
    y = x.clone().requires_grad_()
    torch.testing.assert_close(exp_(y * 1.0), torch.exp(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype,eps", [(torch.float32, 0.05), (torch.float32, 0.005), (torch.float64, 0.001)])
def test_the_one_pass_iteration_equals_the_two_half_steps(dtype, eps, threads, monkeypatch):
    """Images around e_0 plus one at -e_1, texts around e_1 plus one at -e_0: at eps 0.005 rows and columns
    of the float32 kernel underflow, and both forms recompute the same sums exactly (counted); at 0.05 the
    kernel is plain; a float64 kernel at 0.001 is guarded (range 2000 nats) though no sum falls below its
    1e-280. The one pass (3 threads, 67 rows each: groups of 4 and a short one) gives the plan of the two
    half-steps, and both give float64's log-sum-exp plan."""
    g = torch.Generator().manual_seed(4)
    x = torch.cat([F.normalize(torch.randn(200, 8, generator=g) * 0.3 + torch.eye(8)[0], dim=1), -torch.eye(8)[1:2]])
    y = torch.cat([F.normalize(torch.randn(150, 8, generator=g) * 0.3 + torch.eye(8)[1], dim=1), -torch.eye(8)[:1]])
    x, y = x.to(dtype), y.to(dtype)
    monkeypatch.setattr(matvec, "MIN_SPLIT_NUMEL", 0)
    logits = x @ y.T / eps
    kernel, row_max, col_max, plain = stabilise_(logits.clone())
    assert plain == (eps == 0.05)
    recomputed = {"rows": 0, "cols": 0}

    def exact(side, index, potential):
        recomputed[side] += len(index)
        terms = logits[index] + potential[None, :] if side == "rows" else logits[:, index] + potential[:, None]
        return torch.logsumexp(terms, dim=1 if side == "rows" else 0)

    exact_sums = (lambda i, v: exact("rows", i, v), lambda i, u: exact("cols", i, u))
    ops = kernel_ops(kernel, row_max, col_max, dtype, None if plain else exact_sums, 1.0)
    assert ops.iterate is not None
    solved = {}
    for form, half_steps in (("one pass", ops), ("two half-steps", ops._replace(iterate=None))):
        solved[form] = potentials(half_steps, logits.shape, logits.new_zeros(()), 100, None, True, 10)[:2]
        solved[form + " recomputed"] = dict(recomputed)
        recomputed.update(rows=0, cols=0)
    assert solved["one pass recomputed"] == solved["two half-steps recomputed"]
    assert plain or dtype == torch.float64 or min(solved["one pass recomputed"].values()) > 0
    reference = sinkhorn(x.double() @ y.double().T, eps, 100, solver="logsumexp").plan

    def plan(u, v):
        return (x.double() @ y.double().T / eps + u.double()[:, None] + v.double()[None, :]).exp()

    plans = {form: plan(*solved[form]) for form in ("one pass", "two half-steps")}
    assert float((plans["one pass"] - plans["two half-steps"]).abs().sum()) < (2e-6 if plain else 1e-5)
    assert all(float((plan - reference).abs().sum()) < 2e-5 for plan in plans.values())


@pytest.mark.parametrize("solver", ["logsumexp", "matvec"])
@pytest.mark.parametrize("n,m,eps", [(40, 40, 0.05), (30, 50, 0.1), (64, 48, 0.05)])
def test_sinkhorn_matches_pot_log_domain(solver, n, m, eps):
    K = cosine_affinity(n, m, seed=n + m)
    ours = sinkhorn(K, eps, n_iter=20000, tol=1e-13, solver=solver)
    ref = pot.sinkhorn(
        np.full(n, 1 / n), np.full(m, 1 / m), -K.numpy(), eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-14
    )
    assert np.abs(ours.plan.numpy() - ref).max() < 1e-6 / (n * m) ** 0.5
    assert np.abs(ours.plan.numpy() - ref).sum() < 1e-6


def test_pot_solve_agrees_too():
    K = cosine_affinity(32, 32, seed=3)
    ours = sinkhorn(K, 0.05, n_iter=20000, tol=1e-13)
    ref = pot.solve(-K.numpy(), reg=0.05, reg_type="KL", max_iter=20000, tol=1e-14).plan
    assert np.abs(ours.plan.numpy() - ref).sum() < 1e-6


def test_converged_marginals_hold():
    K = cosine_affinity(50, 70, seed=1)
    result = sinkhorn(K, 0.05, n_iter=20000, tol=1e-12)
    P = result.plan
    assert torch.allclose(P.sum(1), torch.full((50,), 1 / 50, dtype=P.dtype), atol=1e-12)
    assert torch.allclose(P.sum(0), torch.full((70,), 1 / 70, dtype=P.dtype), atol=1e-12)
    assert result.marginal_error < 1e-10
    assert result.iterations < 20000  # stopped by the tolerance


def test_reference_scheme_without_symmetric_step_has_exact_column_marginals():
    # u then v: after the last v-update the columns hold exactly, the rows only approximately
    K = cosine_affinity(64, 64, seed=2)
    plain = sinkhorn(K, 0.005, n_iter=100, symmetric=False).plan
    assert torch.allclose(plain.sum(0), torch.full((64,), 1 / 64, dtype=K.dtype), atol=1e-12)
    row_err_plain = (plain.sum(1) - 1 / 64).abs().sum()
    assert row_err_plain > 1e-6  # not converged at eps=0.005 after 100 iterations
    sym = sinkhorn(K, 0.005, n_iter=100, symmetric=True).plan
    col_err_sym = (sym.sum(0) - 1 / 64).abs().sum()
    assert 0 < col_err_sym and (sym.sum(1) - 1 / 64).abs().sum() < row_err_plain


@pytest.mark.parametrize("eps", [0.05, 0.01, 0.005])
def test_matvec_and_logsumexp_run_the_same_iteration(eps):
    K = cosine_affinity(80, 60, seed=4)
    a = sinkhorn(K, eps, n_iter=100, solver="logsumexp").log_plan
    b = sinkhorn(K, eps, n_iter=100, solver="matvec").log_plan
    assert (a - b).abs().max() < 1e-8


def test_float32_auto_solver_matches_float64_reference():
    K64 = cosine_affinity(128, 128, seed=5)
    for eps in (0.05, 0.01, 0.005):
        ref = sinkhorn(K64, eps, solver="logsumexp").log_plan
        ours = sinkhorn(K64.float(), eps).log_plan
        assert ours.dtype == torch.float32
        assert (ours.double() - ref).abs().max() < 5e-3


def test_half_precision_input_is_solved_in_float32():
    K = cosine_affinity(16, 16).half()
    assert sinkhorn(K, 0.05).log_plan.dtype == torch.float32


def test_tolerance_stops_early():
    K = cosine_affinity(40, 40, seed=6)
    result = sinkhorn(K, 0.1, n_iter=1000, tol=1e-9, check_every=5)
    assert result.iterations < 1000 and result.iterations % 5 == 0


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        sinkhorn(torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError, match="solver"):
        sinkhorn(torch.zeros(3, 3), 0.1, solver="fast")


@pytest.mark.parametrize("solver", ["logsumexp", "auto"])
def test_klot_finite_in_float32_at_small_teacher_epsilon(solver):
    K_student = cosine_affinity(256, 256, seed=7, dtype=torch.float32).requires_grad_()
    K_teacher = cosine_affinity(256, 256, seed=8, dtype=torch.float32)
    value = klot(K_student, K_teacher, eps_student=0.05, eps_teacher=0.005, solver=solver)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert torch.isfinite(K_student.grad).all()
    teacher_plan = sinkhorn(K_teacher, 0.005).plan
    assert (teacher_plan == 0).any()  # the underflow the log-plan KL has to survive


def _unrolled_klot(K_student, K_teacher, eps_s, eps_t, n_iter):
    """KL(P_t || P_s) with autograd through every Sinkhorn iteration of the student."""
    log_t = sinkhorn(K_teacher, eps_t, n_iter, tol=1e-14, symmetric=False).log_plan.detach()
    log_s = sinkhorn(K_student, eps_s, n_iter, tol=1e-14, symmetric=False).log_plan
    return plan_kl(log_t, log_s)


@pytest.mark.parametrize("mass", ["unit", "rows"])
def test_klot_gradient_equals_autograd_through_converged_unrolled_sinkhorn(mass):
    K_teacher = cosine_affinity(24, 30, seed=9)
    K_a = cosine_affinity(24, 30, seed=10).requires_grad_()
    K_b = K_a.detach().clone().requires_grad_()
    klot(K_a, K_teacher, 0.1, 0.05, n_iter=5000, mass=mass, tol=1e-14, symmetric=False).backward()
    scale = 24 if mass == "rows" else 1
    (scale * _unrolled_klot(K_b, K_teacher, 0.1, 0.05, 5000)).backward()
    rel = (K_a.grad - K_b.grad).norm() / K_b.grad.norm()
    assert rel < 1e-3


def test_klot_gradient_matches_central_finite_differences():
    K_teacher = cosine_affinity(12, 12, seed=11)
    K = cosine_affinity(12, 12, seed=12).requires_grad_()
    kwargs = dict(eps_student=0.1, eps_teacher=0.05, n_iter=5000, tol=1e-14)
    klot(K, K_teacher, **kwargs).backward()
    h = 1e-5
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        i, j = torch.randint(12, (2,), generator=g).tolist()
        plus, minus = K.detach().clone(), K.detach().clone()
        plus[i, j] += h
        minus[i, j] -= h
        fd = (klot(plus, K_teacher, **kwargs) - klot(minus, K_teacher, **kwargs)) / (2 * h)
        assert abs(fd.item() - K.grad[i, j].item()) < 1e-6 + 1e-4 * abs(fd.item())


def test_klot_is_zero_on_identical_inputs_and_nonnegative():
    K = cosine_affinity(40, 40, seed=13, dtype=torch.float32)
    assert klot(K, K, 0.05, 0.05).abs() < 1e-6
    for seed in range(5):
        Ks = cosine_affinity(40, 55, seed=20 + seed, dtype=torch.float32)
        Kt = cosine_affinity(40, 55, seed=40 + seed, dtype=torch.float32)
        assert klot(Ks, Kt, 0.05, 0.005) >= 0  # 100 iterations: not converged, still >= 0
        assert klot(Ks, Kt, 0.05, 0.01, mass="rows") >= 0


def test_rows_mass_scales_value_and_gradient_by_n():
    Kt = cosine_affinity(20, 30, seed=14)
    Ka = cosine_affinity(20, 30, seed=15).requires_grad_()
    Kb = Ka.detach().clone().requires_grad_()
    unit = klot(Ka, Kt, mass="unit")
    rows = klot(Kb, Kt, mass="rows")
    unit.backward()
    rows.backward()
    assert torch.allclose(rows, 20 * unit)
    assert torch.allclose(Kb.grad, 20 * Ka.grad)


def test_klot_explicit_gradient_is_plan_difference_over_student_epsilon():
    Kt = cosine_affinity(16, 16, seed=16)
    Ks = cosine_affinity(16, 16, seed=17).requires_grad_()
    klot(Ks, Kt, 0.05, 0.01).backward()
    expected = (sinkhorn(Ks.detach(), 0.05).plan - sinkhorn(Kt, 0.01).plan) / 0.05
    assert torch.allclose(Ks.grad, expected, atol=1e-12)


def test_klot_diagnostics_and_errors():
    K = cosine_affinity(8, 8)
    value, diag = klot(K, K, return_diagnostics=True)
    assert set(diag) == {
        "sinkhorn/student_marginal_err",
        "sinkhorn/teacher_marginal_err",
        "sinkhorn/student_iters",
        "sinkhorn/teacher_iters",
    }
    assert diag["sinkhorn/teacher_iters"] == 100
    with pytest.raises(ValueError, match="same shape"):
        klot(K, K[:4])
    with pytest.raises(ValueError, match="mass"):
        klot(K, K, mass="total")
