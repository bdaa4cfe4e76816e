"""``sotalign embed``: extract frozen-encoder embeddings of a dataset into the Parquet store; and
``ensure_tables``, which ``train`` and ``sweep`` call to have every table an experiment reads.

Iconify datasets keep their npm-packed icon sets in ``STORE/_npm`` (in a local cache for a store on
object storage), so a rerun needs neither npm nor the network. The store is a local folder or an
``s3://`` URI (``sotalign.data.fs``), checked reachable before any work. Tables already complete in the store are not recomputed, and an encoder
whose every asked-for table is complete is not even loaded (its id comes from its spec).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.extract import embed_dataset, is_complete, read_table, stored_table, table_dir
from sotalign.data.registry import BUNDLED, ICONIFY, is_iconify, load_dataset, npm_cache
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
        "iconify:SET[,SET...]), an image-caption table (.csv/.jsonl/.parquet) or a class-labelled image folder",
    )
    p.add_argument("--image-column", default="image", help="table column with image paths (default image)")
    p.add_argument("--caption-column", default="caption", help="table column with captions (default caption)")
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
        options = {"skip_bad": args.skip_bad}
        if not Path(args.dataset).is_dir():
            options.update(image_column=args.image_column, caption_column=args.caption_column)
    dataset = load_dataset(args.dataset, **options)
    if dataset.skipped:
        shown = "; ".join(f"{item} ({why})" for item, why in dataset.skipped[:10])
        print(f"skipped {len(dataset.skipped)} bad rows: {shown}{' ...' if len(dataset.skipped) > 10 else ''}")
    splits = args.split or list(dataset.splits)
    for split in splits:
        if split not in dataset.splits:
            raise InputError(f"dataset {dataset.name!r} has no split {split!r}; splits: {', '.join(dataset.splits)}")
    on_ray = args.ray or bool(os.environ.get("RAY_ADDRESS"))
    device = (
        "cuda" if on_ray and args.gpus_per_actor else args.device
    )  # where the encoders run (as embed_with_ray decides)
    folders = []
    for spec in args.encoder or DEFAULT_ENCODERS:
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
    another dataset must already be in the store (`sotalign embed`): every split an experiment
    reads (pool, validation, test, unpaired sources) is checked here, before Ray starts. No
    encoder is loaded for a complete store (ids come from the specs).
    """
    ids: dict[str, str] = {}
    for data in dict.fromkeys(
        (
            e.data.dataset,
            e.data.store,
            e.data.image_encoder,
            e.data.text_encoder,
            e.data.pool_split,
            e.data.val_split,
            e.data.test_split,
            tuple(e.data.unpaired_sources().items()),
        )
        for e in experiments
        if e.data.dataset != "synthetic"
    ):
        dataset, store, image_spec, text_spec, pool_split, val_split, test_split, sources = data
        specs = {"image": image_spec, "text": text_spec}
        ids.update({spec: encoder_id(spec) for spec in specs.values()})
        tables = [
            (dataset, split, modality)
            for split in filter(None, (pool_split, val_split, test_split))
            for modality in specs
        ]
        if dataset == "openmoji":
            ensure_embedded(store, image_spec, text_spec)
            tables = []
        for modality, (name, split) in sources:
            if name in BUNDLED:
                source = load_dataset(name)
                if stored_table(source, split, modality, ids[specs[modality]], store) is None:
                    embed_dataset(source, split, load_encoder(specs[modality]), store)
            else:
                tables.append((name, split, modality))
        for name, split, modality in tables:
            if not is_complete(table_dir(store, name, split, modality, ids[specs[modality]])):
                raise InputError(
                    f"no {modality} embeddings of dataset {name!r} split {split!r} in {store}: run "
                    f"`sotalign embed --encoder '{specs[modality]}' --dataset <your {name} table> --out {store}` first"
                )
    return ids
