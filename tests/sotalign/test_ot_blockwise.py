"""Blockwise KLOT (from the embeddings, no n x m plans) equals dense KLOT on the affinity matrices."""

import pytest
import torch
import torch.nn.functional as F

from sotalign.losses import klot_divergence
from sotalign.ot import is_plain, klot, sinkhorn
from sotalign.ot_blockwise import (
    BLOCK_BYTES,
    MIN_BLOCK_ROWS,
    TeacherPlanCache,
    klot_blockwise,
    rows_per_block,
    sinkhorn_potentials,
)

# Cosine logits span about 2 / eps: 0.05 keeps the plain float32 kernel, 0.01 and 0.001 need the guarded one
# (0.001 beyond float64's range too).
EPSILONS = [0.05, 0.01, 0.001]


def _embeddings(n: int, m: int, d: int = 16, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1), F.normalize(
        torch.randn(m, d, generator=g, dtype=dtype), dim=1
    )


def test_the_three_epsilons_take_the_three_paths():
    x, y = _embeddings(37, 53)
    ranges = [float((x @ y.T / eps).max() - (x @ y.T / eps).min()) for eps in EPSILONS]
    assert [is_plain(r, torch.float32) for r in ranges] == [True, False, False]
    assert [is_plain(r, torch.float64) for r in ranges] == [True, True, False]


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("block_rows", [None, 8])
def test_potentials_give_the_dense_plan(eps, block_rows, products):
    x, y = _embeddings(37, 53)
    u, v, iterations = sinkhorn_potentials(x, y, eps, 100, block_rows=block_rows)
    dense = sinkhorn(x @ y.T, eps, 100)
    assert iterations == dense.iterations == 100
    log_plan = x @ y.T / eps + u[:, None] + v[None, :]
    torch.testing.assert_close(log_plan.exp(), dense.plan, rtol=1e-4, atol=1e-7)


def test_potentials_stop_at_the_tolerance_like_the_dense_solver():
    x, y = _embeddings(40, 40, d=4)
    u, v, iterations = sinkhorn_potentials(x, y, 0.1, 1000, tol=1e-6, check_every=5, block_rows=7)
    assert iterations == sinkhorn(x @ y.T, 0.1, 1000, tol=1e-6, check_every=5).iterations < 1000


@pytest.mark.parametrize("eps_teacher", EPSILONS)
@pytest.mark.parametrize("mass", ["unit", "rows"])
@pytest.mark.parametrize("block_rows", [None, 8])
def test_value_gradient_and_diagnostics_equal_dense_klot(eps_teacher, mass, block_rows, products):
    xs, ys = _embeddings(37, 53, seed=1)
    xt, yt = _embeddings(37, 53, seed=2)
    xs_a, ys_a = xs.clone().requires_grad_(), ys.clone().requires_grad_()
    dense, dense_diag = klot(xs_a @ ys_a.T, xt @ yt.T, 0.05, eps_teacher, 100, mass, return_diagnostics=True)
    dense.backward()
    xs_b, ys_b = xs.clone().requires_grad_(), ys.clone().requires_grad_()
    ours, diag = klot_blockwise(xs_b, ys_b, xt, yt, 0.05, eps_teacher, 100, mass, block_rows=block_rows)
    (3.0 * ours).backward()  # the upstream gradient scales the explicit one
    torch.testing.assert_close(ours, dense, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(xs_b.grad, 3.0 * xs_a.grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ys_b.grad, 3.0 * ys_a.grad, rtol=1e-3, atol=1e-5)
    for key, value in dense_diag.items():
        torch.testing.assert_close(torch.as_tensor(diag[key]), torch.as_tensor(value), rtol=1e-3, atol=1e-6)


def test_float64_embeddings_stay_float64_and_match_dense():
    xs, ys = _embeddings(20, 30, seed=3, dtype=torch.float64)
    xt, yt = _embeddings(20, 30, seed=4, dtype=torch.float64)
    xs.requires_grad_()
    value, _ = klot_blockwise(xs, ys, xt, yt, 0.05, 0.005, block_rows=3)
    value.backward()
    assert value.dtype == xs.grad.dtype == torch.float64
    xs_ref = xs.detach().clone().requires_grad_()
    klot(xs_ref @ ys.T, xt @ yt.T, 0.05, 0.005).backward()
    torch.testing.assert_close(xs.grad, xs_ref.grad, rtol=1e-9, atol=1e-12)


def test_the_training_divergence_is_the_blockwise_klot():
    xs, ys = _embeddings(16, 24, seed=5)
    xt, yt = _embeddings(16, 24, seed=6)
    terms = klot_divergence(xs, ys, xt, yt, eps_student=0.05, eps_teacher=0.01, n_iter=100, mass="unit")
    torch.testing.assert_close(terms["klot"], klot(xs @ ys.T, xt @ yt.T, 0.05, 0.01, 100), rtol=1e-4, atol=1e-6)
    assert terms["sinkhorn/teacher_iters"] == 100


def test_bad_input_is_named():
    xs, ys = _embeddings(5, 6)
    with pytest.raises(ValueError, match="same rows"):
        klot_blockwise(xs, ys, xs[:4], ys)
    with pytest.raises(ValueError, match="n x d and m x d"):
        klot_blockwise(xs, ys[:, :3], xs, ys)
    with pytest.raises(ValueError, match="eps_teacher"):
        klot_blockwise(xs, ys, xs, ys, 0.05, 0.0)
    with pytest.raises(ValueError, match="n_iter"):
        klot_blockwise(xs, ys, xs, ys, n_iter=0)
    with pytest.raises(ValueError, match="mass"):
        klot_blockwise(xs, ys, xs, ys, mass="half")
    with pytest.raises(ValueError, match="block_rows"):
        rows_per_block(10, 0)
    assert rows_per_block(4096) * 4096 * 4 <= BLOCK_BYTES and rows_per_block(32768) == MIN_BLOCK_ROWS


def test_teacher_cache_solves_once_per_distinct_teacher_batch():
    xs, ys = _embeddings(16, 24, seed=7)
    xt, yt = _embeddings(16, 24, seed=8)
    cache = TeacherPlanCache()
    first, _ = klot_blockwise(xs, ys, xt, yt, teacher_cache=cache)
    again, _ = klot_blockwise(
        xs * 0.9 + 0.1, ys, xt.clone(), yt.clone(), teacher_cache=cache
    )  # same teacher rows, new student
    assert cache.solves == 1
    fresh, fresh_diag = klot_blockwise(xs * 0.9 + 0.1, ys, xt, yt)  # the same value, summed in another order
    torch.testing.assert_close(again, fresh, rtol=1e-6, atol=0)
    hit = (xs * 0.9 + 0.1).requires_grad_()
    value, diag = klot_blockwise(hit, ys, xt, yt, teacher_cache=cache)
    miss = (xs * 0.9 + 0.1).requires_grad_()
    klot_blockwise(miss, ys, xt, yt)[0].backward()
    value.backward()
    torch.testing.assert_close(hit.grad, miss.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(diag["sinkhorn/teacher_marginal_err"], fresh_diag["sinkhorn/teacher_marginal_err"])
    assert diag["sinkhorn/teacher_iters"] == fresh_diag["sinkhorn/teacher_iters"] == 100
    klot_blockwise(xs, ys, xt.flip(0), yt, teacher_cache=cache)  # another batch: solved anew
    klot_blockwise(xs, ys, xt, yt, 0.05, 0.005, teacher_cache=cache)  # another epsilon: solved anew
    assert cache.solves == 3
    assert first > 0


def _cosine_like(n: int, seed: int, dtype=torch.float32):
    """Unit rows spread over a 4-d subspace of R^32: cosines span about [-0.9, 0.9], as real embeddings'."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(32, 4, generator=g, dtype=torch.float64))[0]
    return F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64) @ basis.T, dim=1).to(dtype)


@pytest.mark.parametrize("eps", [0.01, 0.005])  # the paper's teacher epsilon, and the released code's
def test_a_float32_teacher_plan_equals_the_float64_one(eps, monkeypatch, products):
    """At the paper's eps* the logits span ~180 nats (360 at 0.005), past float32's exp range: the guarded
    float32 solve (no float64 kernel: the fallback is made to fail) gives the float64 log-sum-exp plan,
    and KLOT's value, to float32 precision. Measured: plan L1 error ~3e-6 of its mass, KLOT ~1e-6."""
    import sotalign.ot_blockwise as blockwise

    monkeypatch.setattr(blockwise, "_wide_ops", lambda *_: pytest.fail("fell back to the float64 kernel"))
    x, y = _cosine_like(300, 0), _cosine_like(260, 1)
    assert not is_plain(float((x @ y.T).max() - (x @ y.T).min()) / eps, torch.float32)
    u, v, _ = sinkhorn_potentials(x, y, eps, 100)
    ours = (x.double() @ y.double().T / eps + u.double()[:, None] + v.double()[None, :]).exp()
    reference = sinkhorn(x.double() @ y.double().T, eps, 100, solver="logsumexp").plan
    assert float((ours - reference).abs().sum() / reference.sum()) < 2e-5
    xs, ys = _cosine_like(300, 2), _cosine_like(260, 3)
    value, _ = klot_blockwise(xs, ys, x, y, 0.05, eps)
    exact = klot(xs.double() @ ys.double().T, x.double() @ y.double().T, 0.05, eps, solver="logsumexp")
    assert abs(float(value) / float(exact) - 1) < 1e-5


def test_sums_that_underflow_are_recomputed_exactly(monkeypatch, products):
    """A text far from every image (opposite the direction they cluster around): at eps 0.005 its whole
    column of the float32 kernel underflows to 0, which unguarded gives an infinite potential. The guarded
    solve recomputes that column's sum and matches the float64 plan."""
    g = torch.Generator().manual_seed(4)
    x = F.normalize(torch.randn(200, 8, generator=g) * 0.3 + torch.eye(8)[0], dim=1)  # images around e_0
    y = torch.cat([F.normalize(torch.randn(150, 8, generator=g), dim=1), -torch.eye(8)[:1]])  # the last text: -e_0
    logits = x @ y.T / 0.005
    assert bool(((logits[:, -1:] - logits.amax(1, keepdim=True)) < -104).all())  # exp underflows, even subnormal
    import sotalign.ot_blockwise as blockwise

    monkeypatch.setattr(blockwise, "_wide_ops", lambda *_: pytest.fail("fell back to the float64 kernel"))
    monkeypatch.setattr(blockwise, "MAX_EXACT_SHARE", 1.0)  # every underflowing sum recomputed, however many
    u, v, _ = sinkhorn_potentials(x, y, 0.005, 100)
    assert bool(torch.isfinite(u).all() and torch.isfinite(v).all())
    ours = (x.double() @ y.double().T / 0.005 + u.double()[:, None] + v.double()[None, :]).exp()
    reference = sinkhorn(x.double() @ y.double().T, 0.005, 100, solver="logsumexp").plan
    assert float((ours - reference).abs().sum() / reference.sum()) < 2e-5
    torch.testing.assert_close(ours[:, -1].sum(), reference[:, -1].sum(), rtol=1e-4, atol=0)


def test_too_many_underflowing_sums_fall_back_to_a_float64_kernel(monkeypatch, products):
    """Images clustered where most texts are far: at eps 0.005 more than 1 in 128 sums of a half-step
    underflow, so the solve takes the float64 kernel instead, and still gives the float64 plan."""
    import sotalign.ot_blockwise as blockwise

    g = torch.Generator().manual_seed(4)
    x = F.normalize(torch.randn(200, 8, generator=g) * 0.3 + torch.eye(8)[0], dim=1)
    y = F.normalize(torch.randn(151, 8, generator=g), dim=1)
    calls, wide = [], blockwise._wide_ops
    monkeypatch.setattr(blockwise, "_wide_ops", lambda *args: calls.append(1) or wide(*args))
    u, v, _ = sinkhorn_potentials(x, y, 0.005, 100)
    assert calls == [1]
    ours = (x.double() @ y.double().T / 0.005 + u.double()[:, None] + v.double()[None, :]).exp()
    reference = sinkhorn(x.double() @ y.double().T, 0.005, 100, solver="logsumexp").plan
    assert float((ours - reference).abs().sum() / reference.sum()) < 2e-5
