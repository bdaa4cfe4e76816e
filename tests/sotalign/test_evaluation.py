"""Chunked metrics against full-matrix, sort-based naive references."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sotalign.evaluation import mutual_knn, plan_accuracy, retrieval, zero_shot


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


def naive_group_retrieval(img, txt, caption_group, image_group, ks=(1, 5, 10)):
    """Brute force of the grouped definition: a hit is any item of the query's group in the top k."""
    sims = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    out = {}
    for k in ks:
        i2t = [any(caption_group[j] == image_group[i] for j in np.argsort(-sims[i])[:k]) for i in range(len(img))]
        t2i = [any(image_group[i] == caption_group[j] for i in np.argsort(-sims[:, j])[:k]) for j in range(len(txt))]
        out[f"i2t_recall_at_{k}"], out[f"t2i_recall_at_{k}"] = 100 * np.mean(i2t), 100 * np.mean(t2i)
    out["mean_recall_at_1"] = (out["i2t_recall_at_1"] + out["t2i_recall_at_1"]) / 2
    return out


def test_retrieval_with_image_groups_matches_brute_force():
    """Several images per concept (styles) and several captions per concept, owned by any of its images."""
    rng = np.random.default_rng(0)
    image_group = rng.integers(0, 15, size=60) * 7 + 3  # 60 images of up to 15 concepts, arbitrary group ids
    concepts = np.unique(image_group)
    centres = {g: rng.normal(size=8) for g in concepts}
    img = np.stack([centres[g] for g in image_group]) + 1.5 * rng.normal(size=(60, 8))
    t2i = np.asarray([rng.choice(np.flatnonzero(image_group == g)) for g in concepts for _ in range(1 + g % 3)])
    txt = np.stack([centres[image_group[i]] for i in t2i]) + 1.5 * rng.normal(size=(len(t2i), 8))
    ours = retrieval(torch.tensor(img), torch.tensor(txt), t2i, image_groups=image_group, chunk_size=7)
    ref = naive_group_retrieval(img, txt, image_group[t2i], image_group)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == pytest.approx(ref[key]), key
    assert 0 < ours["t2i_recall_at_1"] < 100 and 0 < ours["i2t_recall_at_1"] < 100
    # one group per image is the ungrouped definition
    own = torch.tensor(img[:20] + rng.normal(size=(20, 8)))
    assert retrieval(torch.tensor(img[:20]), own, image_groups=np.arange(20) * 2) == retrieval(
        torch.tensor(img[:20]), own
    )
    with pytest.raises(ValueError, match="every image group needs at least one caption"):  # a captionless concept
        retrieval(
            torch.tensor(np.vstack([img, img[:1]])), torch.tensor(txt), t2i, image_groups=np.append(image_group, -1)
        )
    with pytest.raises(ValueError, match="one integer group per image"):
        retrieval(torch.tensor(img), torch.tensor(txt), t2i, image_groups=image_group[:-1])


def test_plan_accuracy_on_a_planted_case():
    """Four concepts as orthogonal unit vectors: cosine 1 with a partner, 0 otherwise. The Gibbs kernel
    exp(K / eps) is then already balanced, so the OT plan puts e^(1/eps) / (e^(1/eps) + 3) of its mass on
    partners, every row's largest entry is a partner, and a uniform plan would put 1/4 there."""
    concepts = torch.eye(4)
    image_labels, text_labels = np.repeat(np.arange(4), 3), np.repeat(np.arange(4), 2)
    images, texts = concepts[image_labels], concepts[text_labels]
    out = plan_accuracy(images, texts, image_labels, text_labels, epsilon=0.5)
    assert out["plan_mass_on_partners"] == pytest.approx(100 * np.e**2 / (np.e**2 + 3), abs=1e-3)
    assert out["plan_argmax_on_partners"] == 100.0 and out["chance_mass_on_partners"] == pytest.approx(25.0)
    wrong = plan_accuracy(images, texts, image_labels, (text_labels + 1) % 4, epsilon=0.5)  # partners are never alike
    assert wrong["plan_mass_on_partners"] == pytest.approx(100 / (np.e**2 + 3), abs=1e-3)
    assert wrong["plan_argmax_on_partners"] == 0.0
    # labels of any type; an image without a partner in the batch does not count for the argmax
    names = np.asarray(["cat", "dog", "owl", "fox"])
    extra = plan_accuracy(
        torch.cat([images, torch.ones(1, 4)]),
        texts,
        np.append(names[image_labels], "emu"),
        names[text_labels],
        epsilon=0.05,
    )
    assert extra["plan_argmax_on_partners"] == 100.0 and extra["plan_mass_on_partners"] > 90
    with pytest.raises(ValueError, match="no image of the batch has a partner"):
        plan_accuracy(images, texts, image_labels, text_labels + 10)
    with pytest.raises(ValueError, match="one label per image"):
        plan_accuracy(images, texts, image_labels[:-1], text_labels)


def test_plan_accuracy_in_row_blocks_equals_a_dense_float64_count(monkeypatch):
    """Read in blocks of 7 rows at eps 0.01 (the guarded float32 solve), the diagnostic equals the one
    counted on the dense float64 log-sum-exp plan of the same 100 iterations (itself checked against POT)."""
    import sotalign.evaluation as evaluation
    from sotalign.ot import sinkhorn

    monkeypatch.setattr(evaluation, "rows_per_block", lambda m: 7)
    g = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(6, 16, generator=g), dim=1)
    image_labels, text_labels = torch.randint(0, 6, (40,), generator=g), torch.randint(0, 6, (33,), generator=g)
    images = F.normalize(centres[image_labels] + 0.4 * torch.randn(40, 16, generator=g), dim=1)
    texts = F.normalize(centres[text_labels] + 0.4 * torch.randn(33, 16, generator=g), dim=1)
    out = plan_accuracy(images, texts, image_labels.numpy(), text_labels.numpy(), epsilon=0.01, n_iter=100)
    plan = sinkhorn(images.double() @ texts.double().T, 0.01, 100, solver="logsumexp").plan
    partner = image_labels[:, None] == text_labels[None, :]
    assert out["plan_mass_on_partners"] == pytest.approx(100 * float(plan[partner].sum() / plan.sum()), abs=1e-3)
    hits = partner.gather(1, plan.argmax(1, keepdim=True)).squeeze(1)[partner.any(1)].double().mean()
    assert out["plan_argmax_on_partners"] == pytest.approx(100 * float(hits))
    assert out["chance_mass_on_partners"] == pytest.approx(100 * float(partner.double().mean()))


def test_a_collapsed_model_scores_chance_not_a_perfect_recall():
    """Constant embeddings tie every candidate: ties are broken at random in expectation, so recall@k is
    k / n (and zero-shot top-1 is 1 / classes), never the 100 that counting only strict wins gave."""
    scores = retrieval(torch.zeros(50, 8), torch.zeros(50, 8))
    for k in (1, 5, 10):
        assert scores[f"i2t_recall_at_{k}"] == pytest.approx(100 * k / 50)
        assert scores[f"t2i_recall_at_{k}"] == pytest.approx(100 * k / 50)
    assert zero_shot(torch.ones(30, 4), np.arange(30) % 10, torch.ones(10, 4))["top1"] == pytest.approx(10.0)


def expected_hits_by_enumeration(sims: np.ndarray, correct: np.ndarray, k: int) -> float:
    """Mean over queries of the share of all tie-breaking orders (every permutation of the candidates,
    used as the tie-breaker under the scores) in which a correct candidate is in the top k."""
    from itertools import permutations

    hits = []
    for row, right in zip(sims, correct):
        orders = list(permutations(range(len(row))))
        top = [sorted(range(len(row)), key=lambda c, order=order: (-row[c], order[c]))[:k] for order in orders]
        hits.append(np.mean([right[t].any() for t in top]))
    return 100.0 * float(np.mean(hits))


def test_ties_count_as_their_expected_share_against_enumerating_every_order():
    """Embeddings on a few lattice points, so that many scores tie exactly; 6 candidates, every order."""
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.integers(0, 2, (6, 3)), dtype=torch.float32)
    texts = torch.tensor(rng.integers(0, 2, (6, 3)), dtype=torch.float32)
    images[images.sum(1) == 0, 0] = 1.0  # no zero vector (normalising it keeps it zero; fine, but keep rows real)
    texts[texts.sum(1) == 0, 1] = 1.0
    groups = np.array([0, 0, 1, 2, 2, 3])  # images 0-1 and 3-4 share their captions
    scores = retrieval(images, texts, np.arange(6), image_groups=groups, ks=(1, 2, 3))
    unit = lambda x: (x / x.norm(dim=1, keepdim=True)).double().numpy()  # noqa: E731
    sims = unit(images) @ unit(texts).T
    same = groups[:, None] == groups[None, :]  # image i, caption j (caption j belongs to image j)
    for k in (1, 2, 3):
        assert scores[f"i2t_recall_at_{k}"] == pytest.approx(expected_hits_by_enumeration(sims, same, k), abs=1e-9)
        assert scores[f"t2i_recall_at_{k}"] == pytest.approx(expected_hits_by_enumeration(sims.T, same.T, k), abs=1e-9)
    assert len(np.unique(np.round(sims, 9))) < sims.size  # the case has ties to break


def test_read_only_index_arrays_are_taken_without_a_warning():
    # Ray's object store hands out read-only arrays; a tensor cannot share their memory
    texts = torch.randn(6, 4)
    t2i, labels = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 0])
    t2i.setflags(write=False)
    labels.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = retrieval(texts[:3], texts, text_to_image=t2i)
        zero_shot(texts[:3], labels, texts[:2])
    assert 0 <= scores["mean_recall_at_1"] <= 100
