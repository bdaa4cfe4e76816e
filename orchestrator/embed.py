"""``sotalign embed``: extract frozen-encoder embeddings of a dataset into the Parquet store; and
``ensure_tables``, which ``train`` and ``sweep`` call to have every table an experiment reads.

Iconify datasets keep their npm-packed icon sets in ``STORE/_npm`` (in a local cache for a store on
object storage), so a rerun needs neither npm nor the network. The store is a local folder or an
``s3://`` URI (``sotalign.data.fs``), checked reachable before any work. Tables already complete in
the store are not recomputed, and an encoder whose every asked-for table is complete is not even
loaded (its id comes from its spec). A user dataset is read in one of the formats of
``sotalign.data.formats``; only the encoders of the modalities it has run (an image-only source
writes only its image table).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.extract import embed_dataset, read_table, stored_table
from sotalign.data.formats import FORMATS, describe_duplicates
from sotalign.data.registry import BUNDLED, ICONIFY, is_iconify, load_dataset, npm_cache
from sotalign.data.sources import check_source
from sotalign.encoders import DEFAULT_TEXT_ENCODER, encoder_id, load_encoder, spec_modality
from sotalign.experiments.bundled import DEMO_IMAGE_ENCODER, ensure_embedded
from sotalign.experiments.experiment import Experiment

DEFAULT_ENCODERS = [DEMO_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER]  # the packaged pair the bundled experiments use


def add_parser(commands) -> None:
    p = commands.add_parser("embed", help="embed a dataset's images or texts into the embedding store")
    p.add_argument(
        "--encoder",
        action="append",
        help="encoder spec, e.g. packaged:efficientnet-lite0, timm:vit_base_patch16_224?pooling=cls+mean_patch, "
        f"hf:/models/minilm; repeat it for several (default: {' and '.join(DEFAULT_ENCODERS)})",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help=f"bundled name ({', '.join(BUNDLED)}), Iconify icon sets from npm ({', '.join(ICONIFY)}, "
        "iconify:SET[,SET...]), or your data: a file, folder or shard pattern, local or s3:// for "
        "webdataset, images, texts and coco (see --format)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="how to read --dataset (default auto). table: image paths + captions (.csv/.jsonl/.parquet); "
        "classes: ROOT/CLASS/images; images: a folder of images at any depth, or a Parquet column of "
        "image bytes (unpaired images); texts: .txt lines or a caption column (unpaired texts); "
        "webdataset: img2dataset tar shards (KEY.jpg + KEY.txt), e.g. 'shards/{00000..00099}.tar'; "
        "hf: a save_to_disk folder or its Parquet; coco: a COCO caption JSON. auto: a brace pattern or "
        ".tar is webdataset; a folder is hf if save_to_disk wrote it, webdataset if all .tar, hf if all "
        ".parquet, classes if no image at its top and every image one folder down in >= 2 folders, "
        "else images; .txt is texts, .json coco; .csv/.jsonl/.parquet is table (image paths and "
        "captions), hf (image bytes) or texts (a caption column, no image column)",
    )
    p.add_argument(
        "--name",
        help="the dataset's name in the store (default: the file's stem, the folder's name, "
        "or the folder holding a shard pattern)",
    )
    p.add_argument("--image-column", default="image", help="column with image paths or bytes (default image)")
    p.add_argument("--caption-column", default="caption", help="column with captions (default caption)")
    p.add_argument("--image-root", help="where a COCO JSON's images are (default: the JSON's folder)")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip missing/unreadable images and empty captions (and report them)"
    )
    p.add_argument("--split", action="append", help="split(s) to embed (default: all of the dataset's splits)")
    p.add_argument("--out", required=True, help="the embedding store: a folder, or s3://BUCKET/PREFIX")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--ray",
        action="store_true",
        help="run as a Ray Data job over an actor pool of encoders (also when RAY_ADDRESS is set)",
    )
    p.add_argument("--actors", type=int, default=2, help="encoder actors with --ray (default 2)")
    p.add_argument(
        "--gpus-per-actor", type=float, default=0.0, help="GPUs per encoder actor with --ray (1 on a GPU cluster)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    fs.check_reachable(args.out)
    options = {}  # for user datasets only; the bundled ones have fixed columns and no bad rows
    if is_iconify(args.dataset):
        options = {"npm_cache": npm_cache(args.out)}
    elif args.dataset not in BUNDLED:
        image_root = args.image_root
        if image_root and not fs.is_remote(image_root):
            image_root = str(Path(image_root).resolve())  # Ray actors may run in another working directory
        options = {
            "skip_bad": args.skip_bad,
            "format": args.format,
            "dataset_name": args.name,
            "image_column": args.image_column,
            "caption_column": args.caption_column,
            "image_root": image_root,
        }
    elif args.format != "auto" or args.name or args.image_root:
        raise InputError(f"--format, --name and --image-root are for your own data, not the bundled {args.dataset!r}")
    on_ray = args.ray or bool(os.environ.get("RAY_ADDRESS"))
    if on_ray and options and not is_iconify(args.dataset) and not fs.is_remote(args.dataset):
        args.dataset = os.path.abspath(args.dataset)  # read once here, its paths used by actors in other folders
    dataset = load_dataset(args.dataset, **options)
    if dataset.skipped:
        shown = "; ".join(f"{item} ({why})" for item, why in dataset.skipped[:10])
        print(f"skipped {len(dataset.skipped)} bad rows: {shown}{' ...' if len(dataset.skipped) > 10 else ''}")
    if getattr(dataset, "duplicates", None):
        print(describe_duplicates(dataset.duplicates, args.dataset))
    specs = args.encoder or DEFAULT_ENCODERS
    missing = [spec for spec in specs if spec_modality(spec) not in dataset.modalities]
    if missing and args.encoder:  # one command line embeds every source: each takes the encoders it can feed
        print(
            f"{dataset.name} has only {' and '.join(m + 's' for m in dataset.modalities)}: not embedded with {', '.join(missing)}"
        )
    specs = [spec for spec in specs if spec_modality(spec) in dataset.modalities]
    if not specs:
        raise InputError(f"dataset {dataset.name!r} has only {' and '.join(dataset.modalities)}: no --encoder for it")
    splits = args.split or list(dataset.splits)
    for split in splits:
        if split not in dataset.splits:
            raise InputError(f"dataset {dataset.name!r} has no split {split!r}; splits: {', '.join(dataset.splits)}")
    device = (
        "cuda" if on_ray and args.gpus_per_actor else args.device
    )  # where the encoders run (as embed_with_ray decides)
    folders = []
    for spec in specs:
        stored = [
            stored_table(dataset, split, spec_modality(spec), encoder_id(spec, device=device), args.out)
            for split in splits
        ]
        if all(stored):  # nothing to embed: no encoder to load (most of a rerun's time) and no Ray job
            folders += stored
        elif on_ray:
            from orchestrator.embed_ray import embed_with_ray

            folders += [
                embed_with_ray(
                    args.dataset,
                    split,
                    spec,
                    args.out,
                    dataset_options=options,
                    loaded=dataset,
                    actors=args.actors,
                    gpus_per_actor=args.gpus_per_actor,
                    device=args.device,
                    batch_size=args.batch_size,
                )
                for split in splits
            ]
        else:
            encoder = load_encoder(spec, device=args.device)
            folders += [
                embed_dataset(dataset, split, encoder, args.out, batch_size=args.batch_size) for split in splits
            ]
    for folder in folders:
        table = read_table(folder)
        print(
            f"{dataset.name}/{table.metadata['split']} {table.metadata['modality']}: {len(table.ids)} x {table.metadata['dim']} -> {folder}"
        )
    return 0


def ensure_tables(experiments: list[Experiment]) -> dict[str, str]:
    """Encoder spec -> stored id for every encoder the experiments read, once their tables are there.

    The bundled benchmarks are embedded where their tables are missing (a no-op once cached);
    another dataset must already be in the store (`sotalign embed`): every table an experiment
    reads (pairs or pool, validation, test, unpaired sources) is checked here, before Ray starts,
    with an error that says what is wrong (missing, the other modality only, another encoder). No
    encoder is loaded for a complete store (ids come from the specs).
    """
    ids: dict[str, str] = {}
    needs = dict.fromkeys(  # a sweep's trials mostly read the same tables: check each once
        (e.data.store, e.data.image_encoder, e.data.text_encoder, e.data.dataset == "openmoji" and not e.data.pairs)
        + tuple(e.data.tables())
        for e in experiments
    )
    for store, image_spec, text_spec, openmoji_pool, *tables in needs:
        specs = {"image": image_spec, "text": text_spec}
        ids.update({spec: encoder_id(spec) for spec in specs.values()})
        if openmoji_pool:  # the bundled benchmark: its pool and test, and digits for zero-shot
            ensure_embedded(store, image_spec, text_spec)
        for setting, ref, modality in tables:
            if ref.dataset in BUNDLED:
                if not (openmoji_pool and ref.dataset == "openmoji"):
                    bundled = load_dataset(ref.dataset)
                    if stored_table(bundled, ref.split, modality, ids[specs[modality]], store) is None:
                        embed_dataset(bundled, ref.split, load_encoder(specs[modality]), store)
            else:
                check_source(store, ref, modality, ids[specs[modality]], setting)
    return ids
