"""Embedding throughput by input format: the same images, the same encoder, read from a folder of
files, from WebDataset tar shards and from a Parquet column of image bytes (images/s, one run).

What it measures is ``sotalign embed``'s whole path for one image table: reading the source
(listing, indexing the shards, checking every image up front) and embedding it into a fresh store;
and, beside it, the reading alone (the same opening and checks, then every image decoded), which is
what a format changes.
The images are the bundled OpenMoji ones (128 px PNGs), the encoder the demo's EfficientNet-Lite0
at 128 px on the CPU, so the ratios say what a format costs beside the encoder, not what a GPU does.

Usage: ``uv run python -m benchmarks.embed_formats [--images 512] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
from pathlib import Path

from benchmarks.harness import fmt, measure, ratio, table

FORMATS = {  # label -> (what the files are, the --format that reads them)
    "image folder": ("folder", "images"),
    "WebDataset shards": ("shards/{00000..00003}.tar", "webdataset"),
    "Parquet of image bytes": ("images.parquet", "hf"),
}
N_SHARDS = 4  # as img2dataset writes them, a few shards of equal size


def build(folder: Path, n: int) -> None:
    """``n`` OpenMoji images written once in every format under ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sotalign.data.registry import load_dataset

    emoji = load_dataset("openmoji")
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        emoji.load_image(i).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    (folder / "folder").mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / "folder" / f"{i:06d}.png").write_bytes(data)
    (folder / "shards").mkdir()
    per_shard = -(-n // N_SHARDS)
    for shard in range(N_SHARDS):
        with tarfile.open(folder / "shards" / f"{shard:05d}.tar", "w") as tar:
            for i in range(shard * per_shard, min(n, (shard + 1) * per_shard)):
                info = tarfile.TarInfo(f"{i:06d}.png")
                info.size = len(images[i])
                tar.addfile(info, io.BytesIO(images[i]))
    pq.write_table(pa.table({"image": pa.array(images, pa.binary())}), folder / "images.parquet")


def embed_case(location: str, format: str):
    """The timed call: read the source and embed its images into a new store."""
    from sotalign.data.extract import embed_dataset
    from sotalign.data.registry import load_dataset
    from sotalign.encoders import load_encoder
    from sotalign.experiments.bundled import DEMO_IMAGE_ENCODER

    encoder = load_encoder(DEMO_IMAGE_ENCODER, device="cpu")

    def run() -> None:
        dataset = load_dataset(location, format=format, dataset_name="bench")
        with tempfile.TemporaryDirectory() as store:
            embed_dataset(dataset, "all", encoder, store, progress=False)

    return run


def read_case(location: str, format: str):
    """The reading alone: open the source (index, check every image) and decode every image."""
    from sotalign.data.registry import load_dataset

    def run() -> None:
        dataset = load_dataset(location, format=format, dataset_name="bench")
        for i in range(len(dataset.image_ids)):
            dataset.load_image(i)

    return run


def run(n: int, repeats: int) -> tuple[str, list[dict]]:
    with tempfile.TemporaryDirectory() as folder:
        build(Path(folder), n)
        results = {
            (label, case): measure(
                f"benchmarks.embed_formats:{case}_case",
                repeats=repeats,
                location=str(Path(folder) / where),
                format=format,
            )
            for label, (where, format) in FORMATS.items()
            for case in ("embed", "read")
        }
    rows, records = [], []
    for label in FORMATS:
        row = [label]
        for case in ("embed", "read"):
            result = results[label, case]
            rate = None if "error" in result else n / result["seconds"]
            speed = ratio(results["image folder", case], result, "seconds")
            row += [fmt(result.get("seconds")), fmt(rate, ".0f"), fmt(speed, ".2f", "x")]
            records.append({"suite": "embed_formats", "format": label, "case": case, "images": n, **result})
        rows.append(row)
    headers = ["source", "embed s", "images/s", "vs folder", "read + decode s", "images/s", "vs folder"]
    text = table(headers, rows)
    return f"## Embedding {n} images by input format (EfficientNet-Lite0 @ 128 px, CPU)\n\n{text}", records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.images, args.repeats)[0])


if __name__ == "__main__":
    main()
