"""Linear teachers against closed forms and independent references (scipy, scikit-learn)."""

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.cross_decomposition import CCA as SklearnCCA

from sotalign import AlignConfig
from sotalign.checks import InputError
from sotalign.evaluation import retrieval
from sotalign.teachers import Teacher, fit_teacher
from sotalign.two_stage import fit_contrastive_teacher


def correlated_views(n=600, dx=7, dy=5, latent=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=g, dtype=torch.float64)
    a = z @ torch.randn(latent, dx, generator=g, dtype=torch.float64) + 0.7 * torch.randn(
        n, dx, generator=g, dtype=torch.float64
    )
    b = z @ torch.randn(latent, dy, generator=g, dtype=torch.float64) + 0.7 * torch.randn(
        n, dy, generator=g, dtype=torch.float64
    )
    return a + 3.0, b - 1.0  # offsets: centring must remove them


def test_procrustes_recovers_a_planted_rotation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    b = a @ rotation
    t = fit_teacher("procrustes", a, b, dim=6, normalize=False, center=False)
    assert torch.allclose(t.image_projection @ t.text_projection.T, rotation, atol=1e-10)
    assert torch.allclose(t.project_images(a), t.project_texts(b), atol=1e-10)
    # orthonormal maps, as the constraint P P^T = I demands
    assert torch.allclose(t.image_projection.T @ t.image_projection, torch.eye(6, dtype=torch.float64), atol=1e-10)


def test_cca_correlations_match_scipy_principal_angles():
    a, b = correlated_views()
    t = fit_teacher("cca", a, b, dim=5, reg=0.0, normalize=False)
    ac, bc = (a - a.mean(0)).numpy(), (b - b.mean(0)).numpy()
    reference = np.sort(np.cos(subspace_angles(ac, bc)))[::-1]
    assert np.allclose(t.correlations.numpy(), reference, atol=1e-10)


def test_cca_first_pair_matches_sklearn():
    a, b = correlated_views(seed=1)
    t = fit_teacher("cca", a, b, dim=1, reg=0.0, normalize=False)
    cca = SklearnCCA(n_components=1, scale=False, max_iter=10000, tol=1e-12).fit(a.numpy(), b.numpy())
    xs, ys = cca.transform(a.numpy(), b.numpy())
    sklearn_corr = abs(np.corrcoef(xs[:, 0], ys[:, 0])[0, 1])
    assert abs(t.correlations[0].item() - sklearn_corr) < 1e-6
    ours = np.corrcoef(t.project_images(a)[:, 0].numpy(), t.project_texts(b)[:, 0].numpy())[0, 1]
    assert abs(ours - sklearn_corr) < 1e-6


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_cca_whitening_constraints_hold(reg):
    a, b = correlated_views(seed=2)
    t = fit_teacher("cca", a, b, dim=4, reg=reg, normalize=False)
    ac, bc = a - a.mean(0), b - b.mean(0)
    n = a.shape[0]
    sxx, syy, sxy = ac.T @ ac / n, bc.T @ bc / n, ac.T @ bc / n
    wx, wy = t.image_projection, t.text_projection
    eye = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(wx.T @ (sxx + reg * torch.eye(7, dtype=torch.float64)) @ wx, eye, atol=1e-9)
    assert torch.allclose(wy.T @ (syy + reg * torch.eye(5, dtype=torch.float64)) @ wy, eye, atol=1e-9)
    assert torch.allclose(wx.T @ sxy @ wy, torch.diag(t.correlations), atol=1e-9)


def test_cca_covariance_normalisation_only_matters_with_a_ridge():
    a, b = correlated_views(seed=3)
    unscaled = fit_teacher("cca", a, b, dim=3, reg=0.0, normalize=False, cov_normalize=False)
    scaled = fit_teacher("cca", a, b, dim=3, reg=0.0, normalize=False, cov_normalize=True)
    assert torch.allclose(unscaled.correlations, scaled.correlations, atol=1e-10)
    ridge_unscaled = fit_teacher("cca", a, b, dim=3, reg=0.1, normalize=False, cov_normalize=False)
    ridge_scaled = fit_teacher("cca", a, b, dim=3, reg=0.1, normalize=False, cov_normalize=True)
    assert not torch.allclose(ridge_unscaled.correlations, ridge_scaled.correlations, atol=1e-3)


def test_preprocessing_is_normalise_then_centre_and_stored(tmp_path):
    a, b = correlated_views(n=50, seed=4)
    t = fit_teacher("cca", a, b, dim=3)
    normed = a / a.norm(dim=1, keepdim=True)
    assert torch.allclose(t.image_prep.mean.double(), normed.mean(0), atol=1e-6)
    t.save(tmp_path / "teacher.safetensors")
    loaded = Teacher.load(tmp_path / "teacher.safetensors")
    assert loaded.kind == "cca" and loaded.dim == 3
    assert torch.allclose(loaded.project_images(a.float()), t.project_images(a.float()))
    assert torch.allclose(loaded.project_texts(b.float()), t.project_texts(b.float()))


def test_contrastive_teacher_aligns_its_pairs():
    a, b = correlated_views(n=64, dx=12, dy=10, latent=6, seed=5)
    config = AlignConfig(teacher="contrastive", teacher_steps=300, teacher_lr=1e-2, optimizer="adamw", seed=0)
    t = fit_contrastive_teacher(a.float(), b.float(), config, dim=8)
    assert t.kind == "contrastive" and t.correlations is None
    score = retrieval(t.project_images(a.float()), t.project_texts(b.float()))["mean_recall_at_1"]
    assert score > 10 * 100 / 64  # chance is 1/64


def test_teacher_errors_name_the_problem(tmp_path):
    a, b = correlated_views(n=20)
    with pytest.raises(InputError, match="unknown closed-form teacher 'ridge'"):
        fit_teacher("ridge", a, b)
    with pytest.raises(InputError, match="trained, not solved: use sotalign.two_stage.fit_contrastive_teacher"):
        fit_teacher("contrastive", a, b)
    with pytest.raises(ValueError, match=r"teacher dim 6 .*d_text=5"):
        fit_teacher("cca", a, b, dim=6)
    with pytest.raises(ValueError, match="n_pairs=4"):
        fit_teacher("procrustes", a[:4], b[:4], dim=5)
    with pytest.raises(TypeError, match="lambda"):
        fit_teacher("cca", a, b, **{"lambda": 0.1})
    with pytest.raises(ValueError, match="same number of rows"):
        fit_teacher("cca", a, b[:10])
    with pytest.raises(ValueError, match="at least 2"):
        fit_teacher("cca", a[:1], b[:1])
    nan = a.clone()
    nan[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf in 1 of 20 rows"):
        fit_teacher("cca", nan, b)
    with pytest.raises(ValueError, match="singular"):
        fit_teacher("cca", a[:4], b[:4], dim=2, reg=0.0)
    (tmp_path / "x.safetensors").write_bytes(b"not a teacher")
    with pytest.raises(ValueError, match="x.safetensors is not a readable safetensors file"):
        Teacher.load(tmp_path / "x.safetensors")
