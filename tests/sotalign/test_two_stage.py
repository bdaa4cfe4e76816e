"""``sotalign.fit`` end to end on the synthetic benchmark, plus its contracts and refusals."""

import pytest
import torch

from sotalign import AlignConfig, AlignedModel, fit
from sotalign.data.synthetic import make_synthetic
from sotalign.evaluation import retrieval
from sotalign.heads import MLPHead, init_from_projection
from sotalign.teachers import fit_teacher

FAST = dict(steps=40, head_dim=32, batch_unpaired=128, log_every=10)


@pytest.fixture(scope="module")
def bench():
    return make_synthetic(n_pairs=32, n_unpaired=600, n_val=100, n_test=200, seed=0)


def data(b):
    return b.paired_images, b.paired_texts, b.unpaired_images, b.unpaired_texts


def test_steps_zero_returns_the_teacher(bench):
    model = fit(*data(bench), AlignConfig(steps=0, teacher_dim=8))
    teacher = model.teacher
    expected = torch.nn.functional.normalize(teacher.project_images(bench.test_images), dim=1)
    assert torch.allclose(model.encode_image(bench.test_images), expected, atol=1e-5)
    assert model.spec["head_dim"] == 8 and model.history == []


def test_sail_needs_no_unpaired_data_and_alpha_zero_is_sail(bench):
    sail = fit(bench.paired_images, bench.paired_texts, config=AlignConfig(divergence="none", **FAST))
    zero = fit(*data(bench), AlignConfig(alpha=0.0, **FAST))
    for a, b in zip(sail.state_dict().values(), zero.state_dict().values()):
        assert torch.equal(a, b)
    assert not any("klot" in k for k in sail.history[-1])


def test_history_and_callback_carry_named_terms(bench):
    seen = []
    model = fit(*data(bench), AlignConfig(**FAST), callback=lambda step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == [10, 20, 30, 40]
    last = model.history[-1]
    for key in (
        "loss/total",
        "loss/siglip",
        "loss/klot",
        "siglip/scale",
        "siglip/bias",
        "lr",
        "sinkhorn/student_marginal_err",
        "sinkhorn/teacher_marginal_err",
        "sinkhorn/teacher_iters",
    ):
        assert key in last and torch.isfinite(torch.tensor(last[key])), key
    assert last["loss/klot"] > 0
    assert last["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine schedule ends at 0


@pytest.mark.parametrize("divergence", ["cka", "ginfonce"])
def test_other_divergences_train(bench, divergence):
    model = fit(*data(bench), AlignConfig(divergence=divergence, **FAST))
    assert f"loss/{divergence}" in model.history[-1]


def test_teacher_init_caps_the_default_teacher_dim_at_the_head_width(bench):
    # the pairs' rank (31) exceeds the head width (8): the default teacher dim follows the heads
    model = fit(*data(bench), AlignConfig(head_init="teacher", **{**FAST, "head_dim": 8, "steps": 1}))
    assert model.teacher.image_projection.shape[1] == 8
    random = AlignConfig(**{**FAST, "head_dim": 8, "steps": 1, "head_init": "random"})
    assert fit(*data(bench), random).teacher.image_projection.shape[1] > 8
    with pytest.raises(ValueError, match="teacher_dim <= head_dim"):
        AlignConfig(head_init="teacher", teacher_dim=16, head_dim=8)


def test_mlp_head_with_teacher_init_starts_at_the_teacher(bench):
    model = fit(*data(bench), AlignConfig(head="mlp", head_init="teacher", teacher_dim=8, **{**FAST, "steps": 1}))
    assert isinstance(model.image_head.mlp, torch.nn.Sequential)
    teacher = fit_teacher("cca", bench.paired_images, bench.paired_texts, dim=8)
    head = MLPHead(bench.paired_images.shape[1], 16, 32)
    init_from_projection(head, teacher.image_projection)
    out = head(teacher.image_prep(bench.test_images))
    ref = teacher.project_images(bench.test_images)
    cos = torch.nn.functional.cosine_similarity(out, torch.cat([ref, torch.zeros(len(ref), 8)], 1), dim=1)
    assert cos.min() > 0.99  # the extra 8 units start 100x smaller than the copied ones


def test_contrastive_teacher_is_trained_even_when_stage_2_is_not(bench):
    model = fit(
        *data(bench), AlignConfig(teacher="contrastive", steps=0, teacher_steps=100, teacher_lr=1e-2, teacher_dim=8)
    )
    score = retrieval(model.encode_image(bench.test_images), model.encode_text(bench.test_texts))["mean_recall_at_1"]
    assert score > 5 * 100 / 200  # chance is 0.5%


def test_teacher_projection_leaves_the_model_where_it_is(bench):
    model = fit(*data(bench), AlignConfig(**{**FAST, "steps": 2}))
    model.teacher.project_images(bench.test_images.to("meta"))  # another device
    assert model.image_prep.mean.device.type == "cpu"
    assert torch.isfinite(model.encode_image(bench.test_images)).all()


def test_validation_selects_best_heads(bench):
    cfg = AlignConfig(eval_every=10, **FAST)
    model = fit(*data(bench), cfg, validation=(bench.val_images, bench.val_texts))
    vals = [h["val/mean_recall_at_1"] for h in model.history if "val/mean_recall_at_1" in h]
    assert len(vals) == 4 and "best_step" in model.history[-1]
    final = retrieval(model.encode_image(bench.val_images), model.encode_text(bench.val_texts))["mean_recall_at_1"]
    assert final == pytest.approx(max(vals), abs=1e-4)


def test_save_load_round_trip(bench, tmp_path):
    model = fit(*data(bench), AlignConfig(**FAST))
    model.save(tmp_path / "m")
    loaded = AlignedModel.load(tmp_path / "m")
    assert torch.allclose(loaded.encode_image(bench.test_images), model.encode_image(bench.test_images), atol=1e-6)
    assert torch.allclose(loaded.encode_text(bench.test_texts), model.encode_text(bench.test_texts), atol=1e-6)
    assert loaded.config == model.config and loaded.history == model.history
    assert loaded.teacher is not None and loaded.teacher.kind == "cca"
    with pytest.raises(ValueError, match="missing model.json"):
        AlignedModel.load(tmp_path / "nothing")


def test_bad_input_is_refused_with_a_named_reason(bench):
    a, b, x, y = data(bench)
    with pytest.raises(
        ValueError, match="unpaired image embeddings have dim 50 but paired image embeddings have dim 96"
    ):
        fit(a, b, x[:, :50], y, AlignConfig(**FAST))
    nan = x.clone()
    nan[7, 0] = float("inf")
    with pytest.raises(ValueError, match="unpaired image embeddings contains NaN/inf in 1 of"):
        fit(a, b, nan, y, AlignConfig(**FAST))
    with pytest.raises(ValueError, match="at least 2"):
        fit(a[:1], b[:1], x, y, AlignConfig(**FAST))
    with pytest.raises(ValueError, match="teacher dim 40 .*n_pairs=32"):
        fit(a, b, x, y, AlignConfig(teacher_dim=40, head_init="random", **FAST))
    with pytest.raises(ValueError, match="needs unpaired images and texts"):
        fit(a, b, config=AlignConfig(**FAST))
    with pytest.raises(ValueError, match="unknown teacher 'pca'"):
        AlignConfig(teacher="pca")
    with pytest.raises(ValueError, match="unknown divergence 'mmd'"):
        AlignConfig(divergence="mmd")
    with pytest.raises(ValueError, match="unknown head kind 'transformer'"):
        AlignConfig(head="transformer")
    with pytest.raises(ValueError, match="unknown AlignConfig key"):
        AlignConfig.from_dict({"epsilon": 0.1})
    with pytest.raises(ValueError, match="eps_teacher must be > 0"):
        AlignConfig(eps_teacher=0)
    assert AlignConfig(lr="1e-3", steps="20").lr == 1e-3  # YAML reads 1e-3 as a string
    with pytest.raises(ValueError, match="steps must be an int, got 2.5"):
        AlignConfig(steps=2.5)
    with pytest.raises(ValueError, match="lr must be a float, got 'fast'"):
        AlignConfig(lr="fast")
    with pytest.raises(ValueError, match="select_best must be a bool"):
        AlignConfig(select_best="yes please")


def test_a_run_resumed_from_a_checkpoint_ends_exactly_where_an_uninterrupted_one_ends(bench):
    import io

    from sotalign.stage2 import Checkpointing

    saved = {}

    def save(step, state):  # persisted the way the orchestrator does, so that nothing stays shared
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved[step] = buffer.getvalue()

    config = AlignConfig(**{**FAST, "eval_every": 10})
    validation = (bench.val_images, bench.val_texts)
    full = fit(*data(bench), config, validation=validation, checkpointing=Checkpointing(15, save))
    assert sorted(saved) == [15, 30]
    state = torch.load(io.BytesIO(saved[15]), weights_only=False)
    assert state["step"] == 15 and state["history"][-1]["step"] == 15 and "val/mean_recall_at_1" in state["history"][-1]
    resumed = fit(
        *data(bench), config, validation=validation, teacher=full.teacher, checkpointing=Checkpointing(resume=state)
    )
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history == full.history and full.history[-1]["best_step"] >= 10
