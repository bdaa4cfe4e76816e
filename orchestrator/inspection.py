"""What every run logs beside its metrics so that its answers can be looked at: the retrieval
gallery (``plots/gallery.png``) and the failure summary (``eval/worst.csv``) of its test split.

The queries are the split's, not the run's (``sotalign.experiments.retrieval_cases.pick_queries``): two runs
of one experiment show the same captions and images, side by side in the MLflow UI's artifact
view. Images and captions are re-read from the dataset by their store ids
(``sotalign.data.items``); a run whose data has none (synthetic) logs no gallery and says why in
its ``gallery`` tag.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import torch

from orchestrator.gallery import draw_gallery
from sotalign.checks import InputError
from sotalign.data.items import DatasetItems, open_items
from sotalign.data.views import RetrievalView, first_rows
from sotalign.experiments.retrieval_cases import confused_pairs, pick_queries, retrieve, worst_captions

GALLERY_FILE, WORST_FILE = "plots/gallery.png", "eval/worst.csv"
GALLERY_TAG = "gallery"  # "plots/gallery.png" (and eval/worst.csv), or "skipped: <why>" (neither)
N_WORST = 20  # rows of each kind in worst.csv: a page to read, not a dump


def inspection_files(experiment, data, model) -> tuple[dict[str, Callable[[Path], object]], dict[str, str]]:
    """(artifact path -> writer, tags) of a trained model's gallery and failure summary. A gallery
    that cannot be drawn (an image file gone) does not fail the run: its writer leaves no file and
    puts the reason in the tags, which are to be logged after the writers ran."""
    view: RetrievalView = data.test
    scored = experiment.data.test_ref() or experiment.data.pairs_ref()  # a test source, or pairs held out of a table
    items = open_items(scored.dataset, experiment.data.store)
    if view.image_ids is None and not isinstance(items, str):
        items = "the test split has no stored ids (held-out pairs without images)"
    if isinstance(items, str):
        return {}, {GALLERY_TAG: f"skipped: {items}"}
    with torch.no_grad():
        image_emb, text_emb = model.encode_image(view.images).cpu(), model.encode_text(view.captions).cpu()
    names = Names(view, items)
    title = (
        f"{experiment.method} | {experiment.data.encoder_pair} | {scored.dataset} "
        f"{scored.split if experiment.data.test_ref() else 'held-out'} | n_pairs {len(data.paired_images)} "
        f"| seed {experiment.seed}"
    )

    tags = {GALLERY_TAG: GALLERY_FILE}

    def gallery(path: Path) -> None:
        by_text, by_image = retrieve(image_emb, text_emb, view, *pick_queries(view))
        draw_gallery(by_text, by_image, names.image, names.caption, title, path)

    def worst(path: Path) -> None:
        write_worst(
            path,
            worst_captions(image_emb, text_emb, view, N_WORST),
            confused_pairs(image_emb, text_emb, view, N_WORST),
            names,
        )

    def guarded(write: Callable[[Path], None]) -> Callable[[Path], None]:
        def run(path: Path) -> None:
            try:
                write(path)
            except (OSError, InputError) as error:  # the dataset's files here differ from the store's
                path.unlink(missing_ok=True)
                tags[GALLERY_TAG] = f"skipped: {error}"

        return run

    return {GALLERY_FILE: guarded(gallery), WORST_FILE: guarded(worst)}, tags


class Names:
    """The view's rows as pictures and words: images, caption texts, and a group's name (its concept,
    or for one image per group that image's first caption)."""

    def __init__(self, view: RetrievalView, items: DatasetItems) -> None:
        self.view, self.items = view, items
        self.first_caption = first_rows(view.caption_image, len(view.images))

    def image(self, row: int):
        return self.items.image(str(self.view.image_ids[row]))

    def image_id(self, row: int) -> str:
        return str(self.view.image_ids[row])

    def caption(self, row: int) -> str:
        return self.items.caption(str(self.view.caption_ids[row]))

    def group(self, group: int) -> str:
        if self.view.group_names is not None:
            return str(self.view.group_names[group])
        return self.caption(int(self.first_caption[group]))


def write_worst(path: Path, captions, pairs, names: Names) -> None:
    """One table of both kinds: ``caption`` rows (a caption, the rank of its right image, what came
    first) and ``confusion`` rows (a concept, the one its captions retrieve instead, how often)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["kind", "query", "right", "returned", "rank", "count"])
        for result in captions:
            out.writerow(
                [
                    "caption",
                    names.caption(result.query),
                    names.image_id(result.answer),
                    names.image_id(result.hits[0].row),
                    result.rank,
                    "",
                ]
            )
        for right, returned, count in pairs:
            out.writerow(["confusion", "", names.group(right), names.group(returned), "", count])
