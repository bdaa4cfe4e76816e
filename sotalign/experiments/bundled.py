"""The bundled benchmark: OpenMoji retrieval and digits zero-shot, embedded into the store.

Pairs come from the OpenMoji pool (image + its first caption); every other pool item gives
one unpaired image and one unpaired caption (independent permutations, no hidden pairing);
a fixed set of pool items is held out for validation (model selection); ``sotalign.experiments.experiment``
draws those budgets. Each trained model is scored on the OpenMoji test split (all captions,
several per image) and zero-shot on the digits test split (class prompts averaged over templates).
"""

from __future__ import annotations

from pathlib import Path

from sotalign.data.extract import embed_dataset, read_table, stored_table, table_dir
from sotalign.data.registry import load_dataset
from sotalign.data.views import ClassificationView, RetrievalView, classification_view, retrieval_view
from sotalign.encoders import DEFAULT_IMAGE_ENCODER, Encoder, encoder_id, load_encoder, spec_modality
from sotalign.evaluation import retrieval, zero_shot

N_VAL = 200  # pool items held out for model selection
VAL_SEED = 12345  # the validation items do not change with the budget seed
DEMO_IMAGE_ENCODER = f"{DEFAULT_IMAGE_ENCODER}?image_size=128"  # docs/notes/assets.md: 64-128 px on CPU


def ensure_embedded(store: str | Path, image_spec: str, text_spec: str, progress: bool = True) -> None:
    """Embed the splits the benchmark reads that ``store`` lacks; an encoder is loaded only when one
    of its tables is missing (a complete store loads no weights)."""
    loaded: dict[str, Encoder] = {}
    for name, splits in (("openmoji", ("pool", "test")), ("digits", ("test",))):
        dataset = load_dataset(name)
        for split in splits:
            for spec in (image_spec, text_spec):
                if stored_table(dataset, split, spec_modality(spec), encoder_id(spec), store) is None:
                    if spec not in loaded:
                        loaded[spec] = load_encoder(spec)
                    embed_dataset(dataset, split, loaded[spec], store, progress=progress)


def stored_view(
    store: str | Path, dataset: str, split: str, image_encoder_id: str, text_encoder_id: str
) -> RetrievalView:
    """The retrieval view of one embedded split (any dataset `sotalign embed` wrote into ``store``)."""
    return retrieval_view(
        read_table(table_dir(store, dataset, split, "image", image_encoder_id)),
        read_table(table_dir(store, dataset, split, "text", text_encoder_id)),
    )


def digits_view(store: str | Path, image_encoder_id: str, text_encoder_id: str) -> ClassificationView:
    """The bundled digits test split with its class x template prompts, for zero-shot top-1."""
    return classification_view(
        read_table(table_dir(store, "digits", "test", "image", image_encoder_id)),
        read_table(table_dir(store, "digits", "classes", "text", text_encoder_id)),
    )


def evaluate_views(model, test: RetrievalView, digits: ClassificationView | None = None) -> dict[str, float]:
    """Retrieval on ``test`` (several captions per image, images grouped by concept where the view says so)
    and, when given, digits zero-shot top-1."""
    scores = retrieval(
        model.encode_image(test.images),
        model.encode_text(test.captions),
        test.caption_image,
        image_groups=test.image_group,
    )
    if digits is None:
        return scores
    prompts = model.encode_text(digits.class_prompts.flatten(0, 1)).unflatten(0, digits.class_prompts.shape[:2])
    return {**scores, "digits_top1": zero_shot(model.encode_image(digits.images), digits.labels, prompts)["top1"]}
