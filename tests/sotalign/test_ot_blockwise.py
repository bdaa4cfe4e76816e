"""Blockwise KLOT (from the embeddings, no n x m plans) equals dense KLOT on the affinity matrices."""

import pytest
import torch
import torch.nn.functional as F

from sotalign.losses import klot_divergence
from sotalign.ot import klot, matvec_dtype, sinkhorn
from sotalign.ot_blockwise import TeacherPlanCache, klot_blockwise, rows_per_block, sinkhorn_potentials

# Cosine logits span about 2 / eps: 0.05 keeps the float32 kernel, 0.01 needs the float64 one,
# 0.001 underflows even float64 and takes the blockwise log-sum-exp path.
EPSILONS = [0.05, 0.01, 0.001]


def _embeddings(n: int, m: int, d: int = 16, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1), F.normalize(
        torch.randn(m, d, generator=g, dtype=dtype), dim=1
    )


def test_the_three_epsilons_take_the_three_paths():
    x, y = _embeddings(37, 53)
    ranges = [float((x @ y.T / eps).max() - (x @ y.T / eps).min()) for eps in EPSILONS]
    assert [matvec_dtype(r, x) for r in ranges] == [torch.float32, torch.float64, None]


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("block_rows", [None, 8])
def test_potentials_give_the_dense_plan(eps, block_rows):
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
def test_value_gradient_and_diagnostics_equal_dense_klot(eps_teacher, mass, block_rows):
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
    assert rows_per_block(32768) * 32768 * 4 <= 1 << 24


def test_teacher_cache_solves_once_per_distinct_teacher_batch():
    xs, ys = _embeddings(16, 24, seed=7)
    xt, yt = _embeddings(16, 24, seed=8)
    cache = TeacherPlanCache()
    first, _ = klot_blockwise(xs, ys, xt, yt, teacher_cache=cache)
    again, _ = klot_blockwise(
        xs * 0.9 + 0.1, ys, xt.clone(), yt.clone(), teacher_cache=cache
    )  # same teacher rows, new student
    assert cache.solves == 1
    torch.testing.assert_close(again, klot_blockwise(xs * 0.9 + 0.1, ys, xt, yt)[0], rtol=0, atol=0)
    klot_blockwise(xs, ys, xt.flip(0), yt, teacher_cache=cache)  # another batch: solved anew
    klot_blockwise(xs, ys, xt, yt, 0.05, 0.005, teacher_cache=cache)  # another epsilon: solved anew
    assert cache.solves == 3
    assert first > 0
