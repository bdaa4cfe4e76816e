"""Encoders through the project's registry: tiny timm / transformers models built from configs
and saved locally (nothing downloads), plus one smoke test on each packaged default."""

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import BertModel

from sotalign.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, encoder_id, load_encoder, parse_spec


def images(n=3):
    return [Image.new("RGB", (64 + 8 * i, 48), (40 * i, 255 - 60 * i, 90)) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file(model.state_dict(), str(path))
    return model.eval(), path


def test_spec_parsing():
    assert parse_spec("timm:vit_b?pooling=cls&pretrained_file=/w.pt") == (
        "timm",
        "vit_b",
        {"pooling": "cls", "pretrained_file": "/w.pt"},
    )
    assert parse_spec("hf:/models/x") == ("hf", "/models/x", {})
    with pytest.raises(ValueError, match="kind:name"):
        parse_spec("vit_b")
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("timm:vit_b?pooling")


@pytest.mark.parametrize("pooling", ["cls", "mean_patch", "cls+mean_patch", "pooled"])
def test_timm_local_weights_and_poolings(tiny_vit, pooling):
    model, path = tiny_vit
    enc = load_encoder(f"timm:vit_tiny_patch16_224?pretrained_file={path}&pooling={pooling}", device="cpu")
    assert enc.modality == "image" and f"pooling={pooling}" in enc.id and str(path.name) in enc.id
    assert "precision=fp32" in enc.id  # CPU: no autocast, whatever precision was asked for
    out = enc.embed(images())
    x = torch.stack([enc.transform(im) for im in images()])
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = {
            "cls": tokens[:, 0],
            "mean_patch": tokens[:, 1:].mean(1),
            "cls+mean_patch": torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1),
            "pooled": model(x),
        }[pooling]
    assert out.shape == (3, enc.dim) and enc.dim == expected.shape[1]
    assert torch.allclose(out, expected, atol=1e-5)  # the saved weights were loaded, not random ones


def test_timm_refusals(tmp_path):
    with pytest.raises(ValueError, match="pretrained_file '.*nothing.safetensors' does not exist"):
        load_encoder(f"timm:vit_tiny_patch16_224?pretrained_file={tmp_path}/nothing.safetensors")
    with pytest.raises(ValueError, match="no \\[CLS\\]"):
        load_encoder("timm:resnet10t?pooling=cls&pretrained=false")
    with pytest.raises(ValueError, match="unknown pooling"):
        load_encoder("timm:resnet10t?pooling=max&pretrained=false")
    cnn = load_encoder("timm:resnet10t?pooling=pooled&pretrained=false", device="cpu")
    assert cnn.embed(images(2)).shape == (2, cnn.dim)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last_token"])
def test_hf_text_poolings(tiny_bert_dir, pooling):
    enc = load_encoder(f"hf:{tiny_bert_dir}?pooling={pooling}&max_length=16", device="cpu")
    texts = ["a photo of a cat", "the red car", "dog"]
    out = enc.embed(texts)
    tok = enc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = BertModel.from_pretrained(tiny_bert_dir)(**tok).last_hidden_state
    mask = tok["attention_mask"]
    if pooling == "mean":
        expected = torch.stack([hidden[i, mask[i].bool()].mean(0) for i in range(3)])
    elif pooling == "cls":
        expected = hidden[:, 0]
    else:
        expected = torch.stack([hidden[i, mask[i].sum() - 1] for i in range(3)])
    assert out.shape == (3, 32) and enc.dim == 32
    assert torch.allclose(out, expected, atol=1e-5)


def test_encoder_ids_are_known_without_loading_weights(tiny_vit, tiny_bert_dir):
    """encoder_id(spec) is the id of the encoder load_encoder(spec) builds (the name of its tables in the store)."""
    _, path = tiny_vit
    specs = [
        f"timm:vit_tiny_patch16_224?pretrained_file={path}&pooling=cls",
        f"hf:{tiny_bert_dir}?pooling=cls&max_length=16",
        f"hf:{tiny_bert_dir}",
        DEFAULT_TEXT_ENCODER,
        f"{DEFAULT_IMAGE_ENCODER}?image_size=64",
    ]
    for spec in specs:
        assert encoder_id(spec, device="cpu") == load_encoder(spec, device="cpu").id, spec
    assert (
        encoder_id("hf:/nonexistent/model/dir", device="cpu")
        == "hf:/nonexistent/model/dir?max_length=77&pooling=mean&precision=fp32"
    )
    assert "precision=fp16" in encoder_id("hf:/nonexistent/model/dir", device="cuda")  # autocast on GPU: another table
    with pytest.raises(ValueError, match="bad option for encoder"):
        encoder_id("packaged:efficientnet-lite0?colour=blue")
    with pytest.raises(ValueError, match="unknown packaged encoder 'clip'"):
        encoder_id("packaged:clip")


def test_unknown_encoders_are_named():
    with pytest.raises(ValueError, match="unknown encoder kind 'onnx'"):
        load_encoder("onnx:x")
    with pytest.raises(ValueError, match="unknown packaged encoder 'clip'"):
        load_encoder("packaged:clip")
    with pytest.raises(ValueError, match="bad option"):
        load_encoder("packaged:efficientnet-lite0?colour=blue")
    with pytest.raises(ValueError, match="cannot load"):
        load_encoder("hf:/nonexistent/model/dir")


def test_packaged_default_image_encoders_smoke():
    for spec in (DEFAULT_IMAGE_ENCODER, "packaged:efficientnet-lite2"):
        enc = load_encoder(spec, image_size=64, device="cpu")
        out = enc.embed(images(2))
        assert out.shape == (2, 1280) and torch.isfinite(out).all() and enc.modality == "image"
        assert not torch.allclose(out[0], out[1])


def test_packaged_default_text_encoder_smoke():
    enc = load_encoder(DEFAULT_TEXT_ENCODER, device="cpu")
    v = F.normalize(enc.embed(["a photo of a cat", "a picture of a kitten", "a red sports car"]), dim=1)
    assert enc.dim == 384 and enc.modality == "text"
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]  # a real sentence embedder (assets.md: 0.79 vs 0.17)
