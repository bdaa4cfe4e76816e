"""Losses against naive, loop-based reference implementations of their formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from sotalign.losses import (
    SigLIPLoss,
    cka_divergence,
    get_divergence,
    ginfonce_divergence,
    info_nce_loss,
    klot_divergence,
    siglip_loss,
)


def unit(n, d, seed, dtype=torch.float64):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=1)


def test_siglip_matches_naive_double_loop():
    K = unit(6, 4, 0) @ unit(6, 4, 1).T
    scale, bias = torch.tensor(13.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    naive = 0.0
    for i in range(6):
        for j in range(6):
            z = 1.0 if i == j else -1.0
            naive -= math.log(1.0 / (1.0 + math.exp(-z * (13.0 * K[i, j].item() - 4.0))))
    assert abs(siglip_loss(K, scale, bias).item() - naive / 6) < 1e-10


def test_siglip_extra_columns_are_negatives():
    K = unit(4, 3, 2) @ unit(7, 3, 3).T
    s, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    naive = -sum(
        math.log(torch.sigmoid((1.0 if i == j else -1.0) * (10.0 * K[i, j] - 5.0)).item())
        for i in range(4)
        for j in range(7)
    )
    assert abs(siglip_loss(K, s, b).item() - naive / 4) < 1e-10


def test_siglip_module_starts_at_paper_values_and_learns_them():
    loss = SigLIPLoss()
    terms = loss(unit(5, 3, 4, torch.float32) @ unit(5, 3, 5, torch.float32).T)
    assert terms["siglip/scale"].item() == pytest.approx(20.0)
    assert terms["siglip/bias"].item() == pytest.approx(-10.0)
    terms["siglip"].backward()
    assert loss.log_scale.grad is not None and loss.bias.grad is not None


def test_info_nce_matches_naive():
    K = unit(5, 3, 6) @ unit(5, 3, 7).T
    t = 0.1
    rows = [-(K[i, i] / t - torch.logsumexp(K[i] / t, 0)) for i in range(5)]
    cols = [-(K[i, i] / t - torch.logsumexp(K[:, i] / t, 0)) for i in range(5)]
    naive = 0.5 * (sum(rows) / 5 + sum(cols) / 5)
    assert torch.allclose(info_nce_loss(K, t), naive)


def test_ginfonce_matches_naive_row_softmax_kl():
    si, st, ti, tt = unit(5, 4, 8), unit(6, 4, 9), unit(5, 3, 10), unit(6, 3, 11)
    K, Kt = si @ st.T, ti @ tt.T
    naive = 0.0
    for i in range(5):
        p = torch.softmax(Kt[i] / 0.01, 0)
        q = torch.softmax(K[i] / 0.05, 0)
        naive += sum(p[j] * (torch.log(p[j]) - torch.log(q[j])) for j in range(6) if p[j] > 0)
    out = ginfonce_divergence(si, st, ti, tt, eps_student=0.05, eps_teacher=0.01, mass="rows")["ginfonce"]
    assert torch.allclose(out, naive)
    unit_mass = ginfonce_divergence(si, st, ti, tt, eps_student=0.05, eps_teacher=0.01, mass="unit")["ginfonce"]
    assert torch.allclose(unit_mass, naive / 5)
    same = ginfonce_divergence(si, st, si, st, eps_student=0.05, eps_teacher=0.05, mass="unit")["ginfonce"]
    assert same.abs() < 1e-10


def test_cka_factorised_equals_dense_centred_frobenius_cosine():
    si, st, ti, tt = unit(7, 4, 12), unit(9, 4, 13), unit(7, 3, 14), unit(9, 3, 15)
    K, Kt = si @ st.T, ti @ tt.T
    h7 = torch.eye(7, dtype=torch.float64) - 1 / 7
    h9 = torch.eye(9, dtype=torch.float64) - 1 / 9
    Kc, Ktc = h7 @ K @ h9, h7 @ Kt @ h9
    dense = 1 - (Kc * Ktc).sum() / (Kc.norm() * Ktc.norm())
    assert torch.allclose(cka_divergence(si, st, ti, tt)["cka"], dense)
    assert cka_divergence(si, st, si, st)["cka"].abs() < 1e-12
    assert cka_divergence(si, st, 3 * si, st)["cka"].abs() < 1e-12  # invariant to the scale of K*


def test_cka_gradient_flows_to_student():
    si = unit(6, 4, 16).requires_grad_()
    cka_divergence(si, unit(6, 4, 17), unit(6, 3, 18), unit(6, 3, 19))["cka"].backward()
    assert si.grad is not None and torch.isfinite(si.grad).all() and si.grad.abs().sum() > 0


def test_klot_divergence_reports_named_terms():
    si = unit(8, 4, 20, torch.float32).requires_grad_()
    terms = klot_divergence(
        si,
        unit(8, 4, 21, torch.float32),
        unit(8, 3, 22, torch.float32),
        unit(8, 3, 23, torch.float32),
        eps_student=0.05,
        eps_teacher=0.01,
        n_iter=100,
        mass="unit",
    )
    assert {"klot", "sinkhorn/teacher_marginal_err", "sinkhorn/student_iters"} <= set(terms)
    terms["klot"].backward()
    assert si.grad.abs().sum() > 0


def test_unknown_divergence_is_named():
    assert get_divergence("none") is None
    with pytest.raises(ValueError, match="unknown divergence 'wasserstein'"):
        get_divergence("wasserstein")


def test_pairs_that_share_a_caption_are_positives_of_each_other():
    """Four pairs, the first two with the same caption (two styles of one concept): SigLIP counts (0, 1)
    and (1, 0) as positives, by hand; so does the stage-2 objective, which finds the twins itself."""
    from torch import nn

    from sotalign.config import AlignConfig
    from sotalign.objectives.base import BatchRows, Objective, Stage2Inputs, Step

    images = unit(4, 3, 4)
    texts = unit(4, 3, 5)
    texts[1] = texts[0]
    K = images @ texts.T
    same = {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (3, 3)}
    naive = -sum(
        math.log(torch.sigmoid((1.0 if (i, j) in same else -1.0) * (10.0 * K[i, j] - 5.0)).item())
        for i in range(4)
        for j in range(4)
    )
    mask = torch.tensor([[(i, j) in same for j in range(4)] for i in range(4)])
    s, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    assert abs(siglip_loss(K, s, b, positive_mask=mask).item() - naive / 4) < 1e-10
    inputs, siglip = Stage2Inputs(images, texts), SigLIPLoss(10.0, -5.0).double()
    step = Step(nn.Identity(), nn.Identity(), siglip, inputs, BatchRows(torch.arange(4)), 1, None)
    loss, _ = Objective(AlignConfig(), inputs)(step)
    scale = siglip.log_scale.exp().item()  # 10 up to the float32 round-off of its stored log
    naive = -sum(
        math.log(torch.sigmoid((1.0 if (i, j) in same else -1.0) * (scale * K[i, j] - 5.0)).item())
        for i in range(4)
        for j in range(4)
    )
    assert abs(loss.item() - naive / 4) < 1e-10  # today's loss pushed image 0 away from its own caption
    assert Stage2Inputs(images, unit(4, 3, 6)).caption_groups is None  # distinct captions: the plain diagonal


def test_info_nce_spreads_each_rows_target_over_its_positives():
    K = unit(3, 4, 7) @ unit(3, 4, 8).T
    mask = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    logp_rows, logp_cols = torch.log_softmax(K / 0.1, dim=1), torch.log_softmax(K.T / 0.1, dim=1)
    naive = 0.0
    for i in range(3):
        positives = [j for j in range(3) if mask[i, j]]
        naive -= 0.5 * sum(logp_rows[i, j].item() for j in positives) / len(positives) / 3
        naive -= 0.5 * sum(logp_cols[i, j].item() for j in positives) / len(positives) / 3
    assert abs(info_nce_loss(K, 0.1, positive_mask=mask).item() - naive) < 1e-10
    assert torch.allclose(info_nce_loss(K, 0.1, positive_mask=torch.eye(3, dtype=torch.bool)), info_nce_loss(K, 0.1))
