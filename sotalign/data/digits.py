"""The bundled ``digits`` zero-shot benchmark: scikit-learn's 1797 handwritten 8 x 8 digits,
drawn as dark ink on white and upscaled to 64 x 64, with class names and prompt templates.
A fixed 800-image test split; the rest can serve as unpaired images (paper Table 7 analogue).

``digits-captions`` is a far-off source of unpaired *texts* for the same analogue: one caption per
pool image, worded with templates of its own (``CAPTION_TEMPLATES``, none of the zero-shot
``TEMPLATES``), so that no unpaired text is a prompt the zero-shot score is computed with.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from sotalign.data.datasets import ClassificationDataset, TextDataset, fixed_split

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [  # CLIP-style prompt variety (paper.md 5: the paper's templates are not stated)
    "a handwritten digit {}.",
    "a photo of the number {}.",
    "a drawing of the digit {}.",
    "a blurry image of the number {}.",
    "the number {}, written by hand.",
]
N_TEST = 800
CAPTION_TEMPLATES = [  # unpaired captions: deliberately disjoint from TEMPLATES (the zero-shot prompts)
    "{} scribbled in pencil.",
    "an 8 by 8 pixel scan of a {}.",
    "someone wrote a {} on a form.",
    "a grey sketch of the figure {}.",
]


def load_digits() -> ClassificationDataset:
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    pixels = (255 - data.images * (255.0 / 16.0)).round().astype(np.uint8)  # ink 16 -> black
    ids = [f"digit-{i:04d}" for i in range(len(pixels))]

    def load(i: int) -> Image.Image:
        return Image.fromarray(pixels[i], mode="L").resize((64, 64), Image.BICUBIC).convert("RGB")

    return ClassificationDataset(
        name="digits",
        image_ids=ids,
        labels=data.target.astype(np.int64),
        class_names=CLASS_NAMES,
        templates=TEMPLATES,
        splits=fixed_split(ids, N_TEST, "digits"),
        load_image=load,
    )


def load_digit_captions() -> TextDataset:
    """One caption per digits pool image, its class in a caption template (cycled over the images)."""
    digits = load_digits()
    pool = digits.splits["pool"]
    texts = [
        CAPTION_TEMPLATES[k % len(CAPTION_TEMPLATES)].format(digits.class_names[digits.labels[i]])
        for k, i in enumerate(pool)
    ]
    return TextDataset(
        name="digits-captions",
        text_ids=[digits.image_ids[i] for i in pool],
        texts=texts,
        splits={"pool": np.arange(len(texts))},
    )
