"""``sotalign embed`` on the formats researchers hold: only the modalities a dataset has are
embedded with the default encoders, and bad input is one ``error:`` line with exit code 2."""

import io
import tarfile

from PIL import Image

from orchestrator.cli import main
from sotalign.data.extract import read_table

IMAGE_SPEC = "packaged:efficientnet-lite0?image_size=32"  # seconds on a CPU


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, "PNG")
    return buffer.getvalue()


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def error_lines(capsys) -> list[str]:
    """The ``error:`` lines on stderr (the image check's progress bar shares it); the error comes last."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors and lines[-1] == errors[-1]
    return errors


def tables(store):
    """(dataset, split, modality) of every complete table in the store."""
    return sorted(tuple(p.relative_to(store).parts[:3]) for p in store.glob("*/*/*/*/_COMPLETE.json"))


def test_image_only_shards_write_only_the_image_table(tmp_path, capsys):
    shards = tmp_path / "unpaired"
    shards.mkdir()
    write_tar(shards / "00000.tar", [("000000.png", png("red")), ("000001.png", png("blue"))])
    write_tar(shards / "00001.tar", [("000002.png", png("green")), ("000003.png", png("red"))])  # 3 = 0
    store = tmp_path / "store"
    pattern = str(shards / "{00000..00001}.tar")
    # the default encoders (an image and a text one): only the image encoder runs
    assert main(["embed", "--dataset", pattern, "--out", str(store), "--name", "pool", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 duplicate images (same bytes) in" in out and "00001.tar: 000003 = " in out
    assert tables(store) == [("pool", "all", "image")]
    assert read_table(next(store.glob("pool/all/image/*"))).ids == [f"pool/{k:06d}" for k in range(4)]
    # only a text encoder for an image-only source is bad input
    args = ["embed", "--dataset", pattern, "--out", str(store), "--encoder", "packaged:all-minilm-l6-v2"]
    assert main(args) == 2
    err = error_lines(capsys)
    assert err == ["error: dataset 'unpaired' has only image: no --encoder for it"]


def test_texts_write_only_the_text_table(tmp_path, capsys):
    (tmp_path / "captions.txt").write_text("a red square\n\na blue circle\n")
    store = tmp_path / "store"
    assert main(["embed", "--dataset", str(tmp_path / "captions.txt"), "--out", str(store), "--device", "cpu"]) == 0
    assert tables(store) == [("captions", "all", "text")]
    assert "captions/all text: 2 x 384" in capsys.readouterr().out


def test_bad_shards_are_one_error_line_or_skipped(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "00000.tar", [("a.png", png("red")), ("a.txt", b"red"), ("b.png", b"junk"), ("b.txt", b"b")])
    store = tmp_path / "store"
    args = ["embed", "--encoder", IMAGE_SPEC, "--dataset", str(shards), "--out", str(store), "--device", "cpu"]
    assert main(args) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: 1 bad rows in") and "00000.tar: b (unreadable image)" in err[0]
    assert not store.exists()
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad rows:" in out and "00000.tar: b (unreadable image)" in out
    assert "shards/all image: 1 x 1280" in out
    (shards / "00001.tar").write_text("this is no tar file, only text")
    assert main(args) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "00001.tar is not a tar file" in err[0]


def test_format_and_coco_image_root_on_the_command_line(tmp_path, capsys):
    import json

    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "r.png").write_bytes(png("red"))
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "r.png"}],
                "annotations": [{"id": 5, "image_id": 1, "caption": "red"}, {"id": 6, "image_id": 2, "caption": "x"}],
            }
        )
    )
    base = ["embed", "--encoder", IMAGE_SPEC, "--out", str(tmp_path / "store"), "--device", "cpu"]
    assert main(base + ["--dataset", str(tmp_path / "ann.json"), "--image-root", str(tmp_path / "pics")]) == 2
    assert "annotation 6 -> image 2" in error_lines(capsys)[0]
    assert main(base + ["--dataset", str(tmp_path / "pics"), "--format", "texts"]) == 2
    assert len(error_lines(capsys)) == 1
    assert main(base + ["--dataset", "digits", "--format", "coco"]) == 2
    assert "for your own data" in error_lines(capsys)[0]
