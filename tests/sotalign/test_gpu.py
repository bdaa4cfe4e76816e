"""The CUDA path (skipped without a GPU): every method trains on the GPU, and the numerics match the CPU."""

import pytest
import torch

from sotalign import AlignConfig, fit
from sotalign.data.synthetic import make_synthetic
from sotalign.evaluation import retrieval
from sotalign.methods import METHODS
from sotalign.ot import klot
from sotalign.ot_blockwise import klot_blockwise

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_the_gpu_and_beats_chance(method):
    bench = make_synthetic(n_pairs=64, n_unpaired=1000, n_val=100, n_test=300, seed=0)
    config = AlignConfig(
        method=method,
        alpha=10.0,
        eps_teacher=0.05,
        lr=1e-3,
        head_dim=64,
        steps=120,
        batch_unpaired=256,
        eval_every=60,
        nnclr_k=3,
        device="cuda",
    ).with_method_preset()
    model = fit(
        bench.paired_images,
        bench.paired_texts,
        bench.unpaired_images,
        bench.unpaired_texts,
        config,
        validation=(bench.val_images, bench.val_texts),
    )
    assert model.device.type == "cuda"
    scores = retrieval(model.encode_image(bench.test_images), model.encode_text(bench.test_texts))
    assert scores["mean_recall_at_1"] > 10 * 100.0 / 300, (method, scores)


@pytest.mark.parametrize("n", [256, 1024])
def test_klot_value_and_gradient_match_the_cpu(n):
    g = torch.Generator().manual_seed(n)
    student = torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=1)
    teacher = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1)
    results = []
    for device in ("cpu", "cuda"):
        K = (student @ student.roll(1, 0).T).to(device).requires_grad_()
        value = klot(K, (teacher @ teacher.roll(1, 0).T).to(device))
        value.backward()
        results.append((value.item(), K.grad.cpu()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    assert torch.allclose(results[1][1], results[0][1], rtol=1e-3, atol=1e-7 * n)


@pytest.mark.parametrize("eps_teacher", [0.05, 0.01, 0.001])  # float32 kernel, float64 kernel, blockwise log-sum-exp
def test_blockwise_klot_on_the_gpu_matches_the_cpu(eps_teacher):
    g = torch.Generator().manual_seed(0)
    xs, ys, xt, yt = (torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1) for _ in range(4))
    results = []
    for device in ("cpu", "cuda"):
        a, b = xs.to(device).requires_grad_(), ys.to(device).requires_grad_()
        value, diagnostics = klot_blockwise(a, b, xt.to(device), yt.to(device), 0.05, eps_teacher, block_rows=64)
        value.backward()
        assert diagnostics["sinkhorn/student_marginal_err"].device.type == device  # left on the device: no host sync
        results.append((value.item(), a.grad.cpu(), b.grad.cpu()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    for cpu, gpu in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-5)
