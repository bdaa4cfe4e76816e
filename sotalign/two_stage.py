"""The two-stage driver, ``sotalign.fit``: stage 1 (a linear teacher on the pairs: a closed form
of ``sotalign.teachers``, or the contrastive one trained here by the stage-2 loop) then stage 2
(heads trained with SigLIP on the pairs plus alpha * divergence to the teacher on unpaired data,
``sotalign.stage2``).

``config.method`` picks the method (``sotalign.methods``): ``sotalign`` with
``divergence="none"`` or ``alpha=0`` is the pairs-only SAIL baseline; ``teacher`` (or
``steps=0``) returns the teacher alone as a model; ``asif`` and ``csa`` are training-free.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sotalign.checks import InputError, as_embeddings, check_pairs, check_same_dim
from sotalign.config import AlignConfig
from sotalign.data.views import RetrievalView, pairs_view
from sotalign.device import resolve_device
from sotalign.distributed import DistributedContext
from sotalign.heads import LinearHead, init_from_projection
from sotalign.losses import SigLIPLoss
from sotalign.model import AlignedModel
from sotalign.objectives import Stage2Inputs
from sotalign.preprocess import Preprocessing
from sotalign.stage2 import Callback, Checkpointing, train_heads
from sotalign.teachers import Teacher, default_teacher_dim, fit_teacher, prepared_pairs
from sotalign.training_free import asif_model, csa_model


def checked_inputs(paired_images, paired_texts, unpaired_images, unpaired_texts, validation, config: AlignConfig):
    """The inputs of ``fit`` as float CPU tensors, checked (shapes, NaNs, what the config needs); the
    validation data (pairs or a view) as a ``RetrievalView``."""
    a = as_embeddings(paired_images, "paired image embeddings").cpu()  # stage 1 runs on the CPU
    b = as_embeddings(paired_texts, "paired text embeddings").cpu()
    check_pairs(a, b)
    x = y = val = None
    if config.uses_unpaired and config.trains:
        if unpaired_images is None or unpaired_texts is None:
            needs = (
                f"divergence {config.divergence!r} with alpha={config.alpha}"
                if config.method == "sotalign"
                else f"method {config.method!r}"
            )
            raise InputError(f"{needs} needs unpaired images and texts (method 'sail' trains on the pairs alone)")
    if unpaired_images is not None:
        x = as_embeddings(unpaired_images, "unpaired image embeddings").cpu()
        check_same_dim(a, x, "paired image embeddings", "unpaired image embeddings")
    if unpaired_texts is not None:
        y = as_embeddings(unpaired_texts, "unpaired text embeddings").cpu()
        check_same_dim(b, y, "paired text embeddings", "unpaired text embeddings")
    if validation is not None:
        val = _checked_validation(validation)
        check_same_dim(a, val.images, "paired image embeddings", "validation image embeddings")
        check_same_dim(b, val.captions, "paired text embeddings", "validation text embeddings")
    return a, b, x, y, val


def _checked_validation(validation) -> RetrievalView:
    """(images, texts) pairs or a ``RetrievalView`` (several captions per image, images grouped by
    concept) as a view of float CPU tensors whose captions all point at one of its images."""
    if isinstance(validation, RetrievalView):
        images = as_embeddings(validation.images, "validation image embeddings").cpu()
        captions = as_embeddings(validation.captions, "validation text embeddings").cpu()
        owners = np.asarray(validation.caption_image)
        if owners.shape != (len(captions),) or (owners.size and (owners.min() < 0 or owners.max() >= len(images))):
            raise InputError(
                f"the validation view's caption_image must hold {len(captions)} image indices in [0, {len(images)})"
            )
        return RetrievalView(
            images, validation.first_captions, captions, owners, validation.image_group, validation.group_names
        )
    if len(validation) != 2:
        raise InputError(f"validation must be (images, texts) pairs or a RetrievalView, got {len(validation)} items")
    images = as_embeddings(validation[0], "validation image embeddings").cpu()
    texts = as_embeddings(validation[1], "validation text embeddings").cpu()
    check_pairs(images, texts, name="validation")
    return pairs_view(images, texts)


def _means(config: AlignConfig, paired: torch.Tensor, unpaired: torch.Tensor | None) -> torch.Tensor | None:
    """Centring mean per ``config.center`` (None = let the teacher use the pairs' mean).

    A pairs-only run (SAIL) never looks at the unpaired data, not even for the mean; the
    ``teacher`` method centres as SOTAlign's stage 1 does (``AlignConfig.centres_on_unpaired``).
    """
    if config.center == "none":
        return torch.zeros(paired.shape[1])
    if config.center == "pairs" or unpaired is None or not config.centres_on_unpaired:
        return None
    both = torch.cat([paired, unpaired])
    return Preprocessing.fit(both, normalize=config.normalize_inputs).mean


def teacher_dim(config: AlignConfig, d_image: int, d_text: int, n_pairs: int) -> int | None:
    """``config.teacher_dim``; by default (None) the teacher's own default, capped at the head width
    when the heads start from the teacher, since they must hold its projection."""
    if config.teacher_dim is not None or config.head_init != "teacher":
        return config.teacher_dim
    return min(default_teacher_dim(d_image, d_text, n_pairs, config.center != "none"), config.head_dim)


def fit_contrastive_teacher(
    a: torch.Tensor, b: torch.Tensor, config: AlignConfig, dim: int | None = None, image_mean=None, text_mean=None
) -> Teacher:
    """The contrastive teacher (SAIL, paper eq. 8): bias-free linear maps trained with SigLIP on the
    preprocessed pairs by the stage-2 loop, for ``config.teacher_steps`` steps at ``config.teacher_lr``
    (None: ``config.lr``) with the config's optimiser, pair batch, seed and device."""
    a, b, image_prep, text_prep, dim = prepared_pairs(
        a, b, dim, config.normalize_inputs, config.center != "none", image_mean, text_mean
    )
    training = config.replace(
        method="sail", divergence="none", head_dim=dim, steps=config.teacher_steps, lr=config.teacher_lr or config.lr
    )
    device = resolve_device(training.device)
    torch.manual_seed(training.seed)
    image_head = LinearHead(a.shape[1], dim, bias=False).to(device)
    text_head = LinearHead(b.shape[1], dim, bias=False).to(device)
    siglip = SigLIPLoss(training.siglip_init_scale, training.siglip_init_bias).to(device)
    train_heads(image_head, text_head, siglip, Stage2Inputs(a.float().to(device), b.float().to(device)), training)
    image_projection = image_head.linear.weight.detach().T.double().cpu()
    return Teacher(
        "contrastive", image_projection, text_head.linear.weight.detach().T.double().cpu(), image_prep, text_prep
    )


def fit_stage1(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor | None, y: torch.Tensor | None, config: AlignConfig
) -> Teacher:
    """Stage 1: the linear teacher on the pairs (the unpaired data only enters the centring mean)."""
    dim = teacher_dim(config, a.shape[1], b.shape[1], a.shape[0])
    image_mean, text_mean = _means(config, a, x), _means(config, b, y)
    if config.teacher == "contrastive":
        return fit_contrastive_teacher(a, b, config, dim, image_mean, text_mean)
    return fit_teacher(
        config.teacher,
        a,
        b,
        dim=dim,
        normalize=config.normalize_inputs,
        center=config.center != "none",
        image_mean=image_mean,
        text_mean=text_mean,
        reg=config.teacher_reg,
        cov_normalize=config.teacher_cov_normalize,
    )


def fit(
    paired_images,
    paired_texts,
    unpaired_images=None,
    unpaired_texts=None,
    config: AlignConfig | None = None,
    *,
    validation: tuple | None = None,
    teacher: Teacher | None = None,
    callback: Callback | None = None,
    distributed: DistributedContext | None = None,
    checkpointing: Checkpointing | None = None,
) -> AlignedModel:
    """Align two frozen embedding spaces; return the trained ``AlignedModel``.

    ``validation`` = (images, texts) held-out pairs, or a ``RetrievalView`` (a validation split
    with several captions per image and images grouped by concept, scored like the test),
    evaluated every ``config.eval_every`` steps (and used for model selection with ``config.select_best``). ``teacher`` skips
    stage 1 with an already fitted teacher. ``callback(step, metrics)`` is called at every
    logged step (every ``config.log_every`` and ``config.eval_every`` steps, checkpoint steps and
    the last one); the same records end up in ``model.history``.
    ``distributed`` runs stage 2 data-parallel (every rank calls ``fit`` with the same data
    and teacher); ``checkpointing`` saves and resumes the stage-2 loop state.
    """
    config = config or AlignConfig()
    a, b, x, y, val = checked_inputs(paired_images, paired_texts, unpaired_images, unpaired_texts, validation, config)
    if config.method == "asif":
        return asif_model(a, b, config).eval()

    if teacher is None:
        teacher = fit_stage1(a, b, x, y, config)
    elif teacher.image_projection.shape[0] != a.shape[1] or teacher.text_projection.shape[0] != b.shape[1]:
        raise InputError(
            f"the given teacher maps {teacher.image_projection.shape[0]}-d images and "
            f"{teacher.text_projection.shape[0]}-d texts, but the data has {a.shape[1]} and {b.shape[1]}"
        )
    if config.method == "csa":
        return csa_model(teacher, config).eval()
    if not config.trains:
        return AlignedModel.from_teacher(teacher, config).eval()

    device = resolve_device(config.device)
    spec = {
        "image_dim": a.shape[1],
        "text_dim": b.shape[1],
        "head": config.head,
        "head_dim": config.head_dim,
        "mlp_hidden": config.mlp_hidden,
        "bias": True,
    }
    torch.manual_seed(config.seed)
    model = AlignedModel(spec, teacher.image_prep, teacher.text_prep, config, teacher)
    if config.head_init == "teacher":
        init_from_projection(model.image_head, teacher.image_projection)
        init_from_projection(model.text_head, teacher.text_projection)
    model.to(device)

    with torch.no_grad():
        prep_img, prep_txt = model.image_prep, model.text_prep
        inputs = Stage2Inputs(prep_img(a.float().to(device)), prep_txt(b.float().to(device)))
        if config.uses_unpaired:
            inputs.unpaired_images = prep_img(x.float().to(device))
            inputs.unpaired_texts = prep_txt(y.float().to(device))
            inputs.teacher_images = F.normalize(teacher.project_images(x.float().to(device)), dim=1)
            inputs.teacher_texts = F.normalize(teacher.project_texts(y.float().to(device)), dim=1)
        if val is not None:
            inputs.val_images = prep_img(val.images.float().to(device))
            inputs.val_texts = prep_txt(val.captions.float().to(device))
            inputs.val_caption_image, inputs.val_image_groups = val.caption_image, val.image_group
    model.history = train_heads(
        model.image_head, model.text_head, model.siglip, inputs, config, callback, distributed, checkpointing
    )
    return model.eval()
