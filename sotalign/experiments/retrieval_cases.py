"""What a model retrieves for a fixed set of test queries, and where it fails worst.

Recall@k says how often a model is right; these say on what. ``pick_queries`` draws the
gallery's queries from a retrieval view with a fixed seed: every run scored on the same split
gets the same queries, so two encoder pairs or two methods can be compared query by query.
``retrieve`` ranks the candidates of each query; ``worst_captions`` and ``confused_pairs`` find
the test captions whose right image ranks lowest and the concepts mistaken for each other most
often. Correctness is retrieval's (``sotalign.evaluation.retrieval``): a caption's right images
are those of its image's group (concept), an image's right captions those of its group.

Everything here takes embeddings already in the joint space (``model.encode_image`` /
``encode_text``), so a planted embedding with a known ranking tests it without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sotalign.checks import InputError
from sotalign.data.views import RetrievalView

N_QUERIES = 8  # captions and images per gallery (issue #14: "e.g. 8"); fits one PNG
TOP_K = 5  # candidates shown per query (issue #14: top-5)
QUERY_SEED = 0  # fixed, not the run's seed: the same queries for every run of a split
CHUNK = 1024  # query rows scored at once: a 1024 x n similarity block


@dataclass
class Hit:
    row: int  # the candidate's row in the view (an image, or a caption)
    score: float  # cosine similarity to the query
    correct: bool


@dataclass
class QueryResult:
    query: int  # the query's row in the view (a caption for text queries, an image for image queries)
    hits: list[Hit]  # the top candidates, best first
    answer: int  # the best-ranked correct candidate
    rank: int  # its rank, 1 = first


def image_groups(view: RetrievalView) -> np.ndarray:
    """Each image's group: its concept where the view has concepts, else the image itself."""
    return np.arange(len(view.images)) if view.image_group is None else np.asarray(view.image_group)


def pick_queries(view: RetrievalView, n: int = N_QUERIES, seed: int = QUERY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(caption rows, image rows): ``n`` captions of distinct groups and ``n`` images of distinct
    groups, drawn with ``seed`` (fewer where the view has fewer groups)."""
    groups = image_groups(view)
    rng = np.random.default_rng(seed)

    def distinct(order: np.ndarray, group_of: np.ndarray) -> np.ndarray:
        _, first = np.unique(group_of[order], return_index=True)  # the first row of each group in ``order``
        return order[np.sort(first)][:n]

    captions = distinct(rng.permutation(len(view.caption_image)), groups[view.caption_image])
    images = distinct(rng.permutation(len(view.images)), groups)
    return captions, images


def retrieve(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    view: RetrievalView,
    caption_rows: np.ndarray,
    image_rows: np.ndarray,
    k: int = TOP_K,
) -> tuple[list[QueryResult], list[QueryResult]]:
    """The top-``k`` images of each query caption and the top-``k`` captions of each query image.

    ``image_emb`` / ``text_emb`` are the view's images and captions (all of them) in the joint space."""
    images, texts = _joint(image_emb, text_emb, view)
    groups = torch.as_tensor(image_groups(view))
    text_groups = groups[torch.as_tensor(view.caption_image)]
    by_text = _ranked(texts[caption_rows], images, text_groups[caption_rows], groups, k)
    by_image = _ranked(images[image_rows], texts, groups[image_rows], text_groups, k)
    return (
        [QueryResult(int(q), *r) for q, r in zip(caption_rows, by_text)],
        [QueryResult(int(q), *r) for q, r in zip(image_rows, by_image)],
    )


def worst_captions(
    image_emb: torch.Tensor, text_emb: torch.Tensor, view: RetrievalView, n: int = 20
) -> list[QueryResult]:
    """The ``n`` captions whose right image ranks lowest (text-to-image), worst first, each with its
    top-1 image; ties in rank keep the view's caption order."""
    results = _all_ranked(image_emb, text_emb, view)
    order = sorted(range(len(results)), key=lambda j: -results[j].rank)
    return [results[j] for j in order[:n]]


def confused_pairs(
    image_emb: torch.Tensor, text_emb: torch.Tensor, view: RetrievalView, n: int = 20
) -> list[tuple[int, int, int]]:
    """(right group, returned group, count): the groups (concepts, or single images) whose captions
    most often retrieve an image of one other group first, most frequent first."""
    groups = image_groups(view)
    counts: dict[tuple[int, int], int] = {}
    for result in _all_ranked(image_emb, text_emb, view):
        right, returned = int(groups[result.answer]), int(groups[result.hits[0].row])
        if right != returned:
            counts[(right, returned)] = counts.get((right, returned), 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(right, returned, count) for (right, returned), count in ranked[:n]]


def _all_ranked(image_emb: torch.Tensor, text_emb: torch.Tensor, view: RetrievalView) -> list[QueryResult]:
    """Every caption as a text-to-image query, with its top-1 image."""
    images, texts = _joint(image_emb, text_emb, view)
    groups = torch.as_tensor(image_groups(view))
    text_groups = groups[torch.as_tensor(view.caption_image)]
    results = []
    for start in range(0, len(texts), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(texts)))
        ranked = _ranked(texts[rows], images, text_groups[rows], groups, 1)
        results += [QueryResult(int(q), *r) for q, r in zip(rows, ranked)]
    return results


def _joint(image_emb, text_emb, view: RetrievalView) -> tuple[torch.Tensor, torch.Tensor]:
    images = F.normalize(torch.as_tensor(image_emb, dtype=torch.float32).cpu(), dim=1)
    texts = F.normalize(torch.as_tensor(text_emb, dtype=torch.float32).cpu(), dim=1)
    if len(images) != len(view.images) or len(texts) != len(view.caption_image):
        raise InputError(
            f"{len(images)} image and {len(texts)} text embeddings for a view of {len(view.images)} images "
            f"and {len(view.caption_image)} captions"
        )
    return images, texts


def _ranked(
    queries: torch.Tensor, candidates: torch.Tensor, query_groups: torch.Tensor, candidate_groups: torch.Tensor, k: int
) -> list[tuple[list[Hit], int, int]]:
    """Per query: its top-``k`` hits, its best-scored correct candidate and that candidate's rank
    (1 + the candidates scored strictly above it, as ``retrieval`` counts)."""
    sims = queries @ candidates.T
    correct = candidate_groups[None, :] == query_groups[:, None]
    best = sims.masked_fill(~correct, float("-inf"))
    answers = best.argmax(1)
    ranks = (sims > best.amax(1, keepdim=True)).sum(1) + 1
    scores, top = sims.topk(min(k, candidates.shape[0]), dim=1)
    return [
        (
            [Hit(int(c), float(s), bool(correct[q, c])) for s, c in zip(scores[q], top[q])],
            int(answers[q]),
            int(ranks[q]),
        )
        for q in range(len(queries))
    ]
