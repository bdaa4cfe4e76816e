"""The gallery's queries and rankings, and the failure summary, on planted embeddings whose rankings
are known, and against a sort-based reference and ``retrieval``'s ranks."""

import numpy as np
import pytest
import torch

from sotalign.checks import InputError
from sotalign.data.views import RetrievalView
from sotalign.evaluation import retrieval
from sotalign.experiments.retrieval_cases import confused_pairs, pick_queries, retrieve, worst_captions


def view_of(images, captions, caption_image, groups=None):
    return RetrievalView(
        torch.as_tensor(images, dtype=torch.float32),
        torch.as_tensor(captions, dtype=torch.float32),
        torch.as_tensor(captions, dtype=torch.float32),
        np.asarray(caption_image),
        None if groups is None else np.asarray(groups),
    )


def planted(n=12, shift=None):
    """Images on the axes; caption j at image j's axis, except the captions in ``shift`` (j -> i),
    planted on image i's axis with a little of their own, so their right image ranks second."""
    images = np.eye(n)
    captions = np.eye(n)
    for j, i in (shift or {}).items():
        captions[j] = np.eye(n)[i] + 0.5 * np.eye(n)[j]
    return images, captions


def test_the_right_item_is_marked_where_the_model_ranks_it():
    images, captions = planted(shift={3: 7})
    view = view_of(images, captions, np.arange(12))
    by_text, by_image = retrieve(view.images, view.captions, view, np.array([3, 5]), np.array([7, 3]), k=4)
    three, five = by_text
    assert [h.row for h in three.hits[:2]] == [7, 3] and [h.correct for h in three.hits[:2]] == [False, True]
    assert three.answer == 3 and three.rank == 2
    assert (
        five.hits[0].row == 5 and five.hits[0].correct and five.rank == 1 and not any(h.correct for h in five.hits[1:])
    )
    seven, image3 = by_image
    assert seven.hits[0].row == 7 and seven.hits[0].correct  # caption 7 is on image 7's axis alone
    assert image3.answer == 3 and image3.rank == 1
    assert all(a.score >= b.score for r in by_text + by_image for a, b in zip(r.hits, r.hits[1:]))


def test_ranks_equal_retrievals_recall_with_groups_and_several_captions():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 6))
    caption_image = np.repeat(np.arange(30), 2)
    captions = images[caption_image] + 1.5 * rng.normal(size=(60, 6))
    groups = np.arange(30) // 3  # three images per concept
    view = view_of(images, captions, caption_image, groups)
    by_text, by_image = retrieve(view.images, view.captions, view, np.arange(60), np.arange(30), k=10)
    scores = retrieval(view.images, view.captions, caption_image, image_groups=groups)
    for k in (1, 5, 10):
        assert 100 * np.mean([r.rank <= k for r in by_text]) == pytest.approx(scores[f"t2i_recall_at_{k}"])
        assert 100 * np.mean([r.rank <= k for r in by_image]) == pytest.approx(scores[f"i2t_recall_at_{k}"])
        assert 100 * np.mean([any(h.correct for h in r.hits[:k]) for r in by_text]) == pytest.approx(
            scores[f"t2i_recall_at_{k}"]
        )
    for r in by_text:  # correct = same concept, from a sort-based reference
        sims = view.captions[r.query] @ view.images.T / view.images.norm(dim=1)
        assert [h.row for h in r.hits] == torch.argsort(sims, descending=True)[:10].tolist()
        assert [h.correct for h in r.hits] == [groups[h.row] == groups[caption_image[r.query]] for h in r.hits]


def test_queries_are_fixed_by_the_split_and_distinct_concepts():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 4)
    view = view_of(rng.normal(size=(80, 5)), rng.normal(size=(80, 5)), np.arange(80), groups)
    captions, images = pick_queries(view, n=8)
    again = view_of(rng.normal(size=(80, 5)), rng.normal(size=(80, 5)), np.arange(80), groups)  # another run's model
    assert [a.tolist() for a in pick_queries(again, n=8)] == [captions.tolist(), images.tolist()]
    assert len(set(groups[captions])) == 8 and len(set(groups[images])) == 8
    assert len(pick_queries(view, n=50)[0]) == 20  # no more queries than concepts
    assert pick_queries(view, n=8, seed=1)[0].tolist() != captions.tolist()


def test_worst_captions_and_confused_pairs():
    images, captions = planted(shift={2: 9, 4: 9, 6: 1})
    captions[6] = np.eye(12)[1] + np.eye(12)[9] * 0.9 + np.eye(12)[6] * 0.4  # image 6 third
    view = view_of(images, captions, np.arange(12))
    worst = worst_captions(view.images, view.captions, view, n=3)
    assert [(r.query, r.rank) for r in worst] == [(6, 3), (2, 2), (4, 2)]
    assert worst[0].hits[0].row == 1 and worst[0].answer == 6
    assert confused_pairs(view.images, view.captions, view) == [(2, 9, 1), (4, 9, 1), (6, 1, 1)]
    grouped = view_of(images, captions, np.arange(12), np.array([0, 1, 2, 3, 2, 5, 6, 7, 8, 9, 10, 11]))
    assert confused_pairs(grouped.images, grouped.captions, grouped)[0] == (2, 9, 2)  # two captions of one concept


def test_embeddings_of_another_view_are_refused():
    images, captions = planted()
    view = view_of(images, captions, np.arange(12))
    with pytest.raises(InputError, match="11 image and 12 text embeddings"):
        worst_captions(view.images[:11], view.captions, view)
