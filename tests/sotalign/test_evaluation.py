"""Chunked metrics against full-matrix, sort-based naive references."""

import numpy as np
import pytest
import torch

from sotalign.evaluation import mutual_knn, retrieval, zero_shot


def naive_retrieval(img, txt, t2i, ks=(1, 5, 10)):
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sims = img @ txt.T
    out = {}
    for k in ks:
        i2t = [bool(set(np.argsort(-sims[i])[:k]) & set(np.where(t2i == i)[0])) for i in range(len(img))]
        t2i_hit = [t2i[j] in np.argsort(-sims[:, j])[:k] for j in range(len(txt))]
        out[f"i2t_recall_at_{k}"] = 100 * np.mean(i2t)
        out[f"t2i_recall_at_{k}"] = 100 * np.mean(t2i_hit)
    out["mean_recall_at_1"] = (out["i2t_recall_at_1"] + out["t2i_recall_at_1"]) / 2
    return out


@pytest.mark.parametrize("captions_per_image", [1, 3])
def test_retrieval_matches_naive_reference(captions_per_image):
    rng = np.random.default_rng(captions_per_image)
    img = rng.normal(size=(37, 8))
    t2i = np.repeat(np.arange(37), captions_per_image)
    txt = img[t2i] + 1.2 * rng.normal(size=(len(t2i), 8))
    ours = retrieval(torch.tensor(img), torch.tensor(txt), None if captions_per_image == 1 else t2i, chunk_size=5)
    ref = naive_retrieval(img, txt, t2i)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == pytest.approx(ref[key]), key
    assert 0 < ours["t2i_recall_at_1"] < 100  # the test is not trivially saturated


def test_retrieval_perfect_and_errors():
    x = torch.randn(10, 4)
    assert retrieval(x, x)["mean_recall_at_1"] == 100.0
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval(x, x[:5])
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval(x, x[:5], text_to_image=[0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="dim"):
        retrieval(x, torch.randn(10, 3))


def test_zero_shot_matches_naive_and_averages_templates():
    rng = np.random.default_rng(0)
    classes = rng.normal(size=(6, 3, 5))  # 6 classes x 3 templates
    labels = rng.integers(0, 6, size=40)
    img = classes[labels].mean(1) + 0.8 * rng.normal(size=(40, 5))
    ours = zero_shot(torch.tensor(img), torch.tensor(labels), torch.tensor(classes))
    templ = classes / np.linalg.norm(classes, axis=2, keepdims=True)
    centroids = templ.mean(1)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    scores = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ centroids.T
    order = np.argsort(-scores, axis=1)
    assert ours["top1"] == pytest.approx(100 * np.mean(order[:, 0] == labels))
    assert ours["top5"] == pytest.approx(100 * np.mean([labels[i] in order[i, :5] for i in range(40)]))
    assert set(zero_shot(torch.tensor(img), torch.tensor(labels) % 3, torch.tensor(classes[:3]))) == {"top1"}


def test_mutual_knn_matches_naive_sets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 6))
    b = a + 0.9 * rng.normal(size=(30, 6))

    def knn(x, k):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-s[i])[:k]) for i in range(len(x))]

    na, nb = knn(a, 4), knn(b, 4)
    naive = np.mean([len(na[i] & nb[i]) / 4 for i in range(30)])
    assert mutual_knn(torch.tensor(a), torch.tensor(b), k=4, chunk_size=7) == pytest.approx(naive)
    assert mutual_knn(torch.tensor(a), torch.tensor(a), k=4) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        mutual_knn(torch.tensor(a), torch.tensor(b), k=30)
