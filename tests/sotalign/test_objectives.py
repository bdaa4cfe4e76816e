"""The paper's baselines: each trains (or is built) and beats chance on the synthetic benchmark,
and each closed-form piece matches a naive reference."""

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from sotalign import AlignConfig, AlignedModel, fit
from sotalign.data.synthetic import make_synthetic
from sotalign.evaluation import retrieval
from sotalign.losses import siglip_loss
from sotalign.methods import METHODS
from sotalign.objectives.nnclr import nearest_neighbours
from sotalign.objectives.sclip import caption_pseudo_labels
from sotalign.objectives.structure import js_divergence, structure_regularizer, transition_matrix

FAST = AlignConfig(  # random heads: each objective trains from scratch (semi-SAIL started at the teacher
    head_init="random",  # collapses here: its unpaired negatives push apart pairs the teacher had aligned)
    alpha=10.0,
    eps_teacher=0.05,
    lr=1e-3,
    head_dim=64,
    steps=120,
    batch_unpaired=256,
    log_every=60,
    eval_every=60,
    nnclr_k=3,
)


@pytest.fixture(scope="module")
def bench():
    return make_synthetic(n_pairs=64, n_unpaired=1000, n_val=100, n_test=300, seed=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_beats_chance_on_the_synthetic_benchmark(bench, method):
    config = FAST.replace(method=method).with_method_preset()
    model = fit(
        bench.paired_images,
        bench.paired_texts,
        bench.unpaired_images,
        bench.unpaired_texts,
        config,
        validation=(bench.val_images, bench.val_texts),
    )
    scores = retrieval(model.encode_image(bench.test_images), model.encode_text(bench.test_texts))
    chance = 100.0 / len(bench.test_images)
    assert scores["mean_recall_at_1"] > 10 * chance, (method, scores)
    if config.trains:  # the method's own terms were optimised and logged
        own = {
            "semi_structure": "loss/structure",
            "structure": "loss/structure",
            "nnclr": "nnclr/text",
            "sclip": "sclip/image",
            "sotalign": "loss/klot",
        }.get(method, "loss/siglip")
        assert np.isfinite(model.history[-1][own])


def test_siglip_extra_rows_and_columns_are_negatives_only():
    g = torch.Generator().manual_seed(0)
    K, scale, bias = torch.randn(5, 7, generator=g, dtype=torch.float64), 3.0, -1.0
    naive = sum(
        -np.log(1 / (1 + np.exp(-(1 if i == j and i < 3 else -1) * (scale * K[i, j].item() + bias))))
        for i in range(5)
        for j in range(7)
    )
    assert siglip_loss(K, scale, bias, positives=3).item() == pytest.approx(naive / 3, rel=1e-12)


def test_js_divergence_matches_scipy():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(6, 9, generator=g, dtype=torch.float64).softmax(1)
    q = torch.rand(6, 9, generator=g, dtype=torch.float64).softmax(1)
    reference = np.mean([jensenshannon(a, b) ** 2 for a, b in zip(p.numpy(), q.numpy())])  # scipy: sqrt of JS, nats
    assert js_divergence(p, q).item() == pytest.approx(reference, rel=1e-9)


def test_structure_regularizer_levels_are_matrix_powers_and_zero_for_the_same_geometry():
    g = torch.Generator().manual_seed(2)
    original, aligned = (
        torch.randn(12, 5, generator=g, dtype=torch.float64),
        torch.randn(12, 8, generator=g, dtype=torch.float64),
    )
    t_o, t_a = transition_matrix(original, 0.07), transition_matrix(aligned, 0.07)
    assert torch.allclose(t_o.sum(1), torch.ones(12, dtype=torch.float64))
    x = F.normalize(original, dim=1)
    x = x - x.mean(0)
    naive = torch.exp(x @ x.T / 0.07) / torch.exp(x @ x.T / 0.07).sum(1, keepdim=True)
    assert torch.allclose(t_o, naive)
    two = 0.5 * (js_divergence(t_o, t_a) + js_divergence(t_o @ t_o, t_a @ t_a))
    assert structure_regularizer(original, aligned, levels=2).item() == pytest.approx(two.item(), rel=1e-6)
    assert structure_regularizer(original, 3.0 * original).item() < 1e-9  # cosine geometry is scale-free


def test_nearest_neighbours_match_brute_force_with_self_excluded_and_chunks(monkeypatch):
    import sotalign.objectives.nnclr as nnclr

    g = torch.Generator().manual_seed(3)
    pool = torch.randn(40, 6, generator=g)
    monkeypatch.setattr(nnclr, "_CHUNK_ELEMENTS", 100)  # 2 queries per chunk
    found = nearest_neighbours(pool[:10], pool, 4, exclude=torch.arange(10))
    sims = F.normalize(pool[:10], dim=1) @ F.normalize(pool, dim=1).T
    sims[torch.arange(10), torch.arange(10)] = -2
    assert torch.equal(found, sims.argsort(1, descending=True)[:, :4])
    with pytest.raises(ValueError, match="neighbours"):
        nearest_neighbours(pool[:2], pool[:3], 3, exclude=torch.arange(2))


def test_sclip_soft_labels_are_the_normalised_plan_rows_of_pot():
    g = torch.Generator().manual_seed(4)
    unpaired, paired = (
        torch.randn(7, 5, generator=g, dtype=torch.float64),
        torch.randn(4, 5, generator=g, dtype=torch.float64),
    )
    soft = caption_pseudo_labels(unpaired, paired, eps=0.1, n_iter=2000, hard=False)
    K = (F.normalize(unpaired, dim=1) @ F.normalize(paired, dim=1).T).numpy()
    plan = ot.sinkhorn(
        np.full(7, 1 / 7), np.full(4, 1 / 4), -K, 0.1, method="sinkhorn_log", numItermax=10000, stopThr=1e-13
    )
    assert np.allclose(soft.numpy(), plan / plan.sum(1, keepdims=True), atol=1e-8)
    hard = caption_pseudo_labels(unpaired, paired, eps=0.1, n_iter=2000, hard=True)
    assert torch.equal(hard.argmax(1), soft.argmax(1)) and torch.equal(hard.sum(1), torch.ones(7, dtype=hard.dtype))


def test_asif_encodings_are_sparse_powered_anchor_similarities_and_survive_save_load(bench, tmp_path):
    config = AlignConfig(method="asif", asif_k=5, asif_p=3.0)
    model = fit(bench.paired_images, bench.paired_texts, config=config)
    queries = bench.test_images[:6]
    x = F.normalize(model.image_prep(queries), dim=1)
    anchors = F.normalize(model.image_prep(bench.paired_images), dim=1)
    sims = (x @ anchors.T).numpy()
    naive = np.zeros_like(sims)
    for i, row in enumerate(sims):
        top = np.argsort(-row)[:5]
        naive[i, top] = np.clip(row[top], 0, None) ** 3
    naive /= np.linalg.norm(naive, axis=1, keepdims=True)
    encoded = model.encode_image(queries)
    assert np.allclose(encoded.numpy(), naive, atol=1e-5) and (encoded != 0).sum(1).max() <= 5
    model.save(tmp_path / "asif")
    assert torch.allclose(
        AlignedModel.load(tmp_path / "asif").encode_text(bench.test_texts[:6]), model.encode_text(bench.test_texts[:6])
    )


def test_csa_scores_are_correlation_weighted_canonical_products(bench):
    model = fit(bench.paired_images, bench.paired_texts, config=AlignConfig(method="csa"))
    teacher = model.teacher
    rho = teacher.correlations.float()
    xi, yt = teacher.project_images(bench.test_images[:5]).float(), teacher.project_texts(bench.test_texts[:5]).float()
    naive = (xi * rho) @ yt.T / torch.outer((xi.pow(2) * rho).sum(1).sqrt(), (yt.pow(2) * rho).sum(1).sqrt())
    assert torch.allclose(
        model.encode_image(bench.test_images[:5]) @ model.encode_text(bench.test_texts[:5]).T, naive, atol=1e-5
    )
    with pytest.raises(ValueError, match="needs teacher 'cca'"):
        AlignConfig(method="csa", teacher="procrustes")


def test_unknown_method_and_missing_unpaired_data_are_named(bench):
    with pytest.raises(ValueError, match="unknown method 'clip'; expected one of 'sotalign'"):
        AlignConfig(method="clip")
    with pytest.raises(ValueError, match="method 'nnclr' needs unpaired images and texts"):
        fit(bench.paired_images, bench.paired_texts, config=AlignConfig(method="nnclr", steps=5))
