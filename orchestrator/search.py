"""``sotalign search``: ask a trained model for the images of a caption or the captions of an image.

The model comes from an MLflow run (its ``model`` artifact) or a saved model folder; the
candidates are an embedded split of the store. The query is embedded with the frozen encoder
the model was trained on (recorded in ``model.json``), so the answer is the aligned space's own:
a store embedded with another encoder is refused, since its vectors are not the ones the model's
heads read. ``--json`` prints the hits as a JSON list (rank, score, id, caption) instead of the table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from orchestrator.gallery import contact_sheet
from orchestrator.hints import command
from orchestrator.output import add_json_argument, json_output
from orchestrator.tracking import client, tracking_uri
from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.extract import MANIFEST, is_complete, read_table, table_dir
from sotalign.data.items import open_items
from sotalign.encoders import encoder_id, load_encoder
from sotalign.model import AlignedModel

K = 5  # results shown by default: one contact-sheet row


def add_parser(commands) -> None:
    p = commands.add_parser("search", help="the top images for a caption, or captions for an image, of a trained model")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", dest="run_id", help="MLflow run id whose model to use")
    source.add_argument("--model", type=Path, help="a saved model folder (model.json + model.safetensors)")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help='a caption: returns the top images ("a red apple")')
    query.add_argument("--image", type=Path, help="an image file: returns the top captions")
    p.add_argument("--k", type=int, default=K, help=f"results to return (default {K})")
    p.add_argument("--store", default=None, help="embedding store (default: the one the model was trained from)")
    p.add_argument("--dataset", default=None, help="dataset of the candidates (default: the model's)")
    p.add_argument("--split", default=None, help="split of the candidates (default: the model's test split)")
    p.add_argument("--out", type=Path, default=None, help="write a contact sheet of the results (PNG)")
    p.add_argument("--tracking-uri", default=None, help="with --run: MLflow tracking URI (default as `sotalign ui`)")
    add_json_argument(p, "the hits (rank, score, id, caption)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    if args.image is not None and not args.image.is_file():
        raise InputError(f"--image {args.image}: no such file")
    with json_output(args.json) as emit:  # an encoder's chatter must not reach --json's stdout
        with tempfile.TemporaryDirectory() as folder:
            model = load_model(args, Path(folder))
        where = {**model.provenance, **{k: v for k in ("store", "dataset", "split") if (v := getattr(args, k))}}
        missing = [k for k in ("image_encoder", "text_encoder", "store", "dataset", "split") if not where.get(k)]
        if missing:
            raise InputError(
                f"the model records no {', '.join(missing)} (saved before models kept their provenance, or trained on "
                "held-out pairs): pass --store/--dataset/--split; a model without its encoders cannot embed a query"
            )
        modality = "image" if args.text is not None else "text"  # what is searched
        table = candidates(where, modality, model)
        with torch.no_grad():
            query = embedded_query(args, where, model)
            found = model.encode_image(table.embeddings) if modality == "image" else model.encode_text(table.embeddings)
        scores, rows = (found @ query[0]).topk(min(args.k, len(found)))
        items = open_items(where["dataset"], where["store"])
        describe = (
            (lambda i: "") if isinstance(items, str) else (items.caption if modality == "text" else items.describe)
        )
        label = args.text if args.text is not None else str(args.image)
        ids = [table.ids[int(r)] for r in rows]
        hits = [
            {"rank": rank, "score": score, "id": store_id, "caption": describe(store_id)}
            for rank, (score, store_id) in enumerate(zip(scores.tolist(), ids), start=1)
        ]
        if args.json:
            emit(hits)
        else:
            print(f"top {len(rows)} {modality}s of {where['dataset']}/{where['split']} for {label!r}:")
            print("| rank | score | id | caption |")
            print("|---|---|---|---|")
            for hit in hits:
                print(f"| {hit['rank']} | {hit['score']:.3f} | {hit['id']} | {hit['caption']} |")
        if args.out is not None:
            if isinstance(items, str):
                raise InputError(f"--out needs the candidates' images, but {items}")
            pictures = [items.image(i if modality == "image" else i.rpartition("#")[0]) for i in ids]
            labels = [f"#{hit['rank']}  {hit['score']:.2f}  {hit['caption']}" for hit in hits]
            contact_sheet(pictures, labels, args.out, f"{label} -> {where['dataset']}/{where['split']}")
            print(f"\nwrote {args.out}")
    return 0


def embedded_query(args: argparse.Namespace, where: dict, model: AlignedModel) -> torch.Tensor:
    """The ``--text`` or ``--image`` query in the joint space, through the model's own frozen encoder."""
    if args.text is not None:
        return model.encode_text(load_encoder(where["text_encoder"]).embed([args.text]))
    from PIL import Image

    try:
        image = Image.open(args.image).convert("RGB")
    except OSError as error:  # not an image, or a truncated one
        raise InputError(f"--image {args.image} is not a readable image: {error}") from None
    return model.encode_image(load_encoder(where["image_encoder"]).embed([image]))


def load_model(args: argparse.Namespace, folder: Path) -> AlignedModel:
    """The ``--model`` folder, or the ``model`` artifact of ``--run`` downloaded into ``folder``."""
    if args.model is not None:
        return AlignedModel.load(args.model)
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(args.tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one model folder: no bar
    try:
        path = client(uri).download_artifacts(args.run_id, "model", str(folder))
    except MlflowException as error:
        raise InputError(f"run {args.run_id!r} at {uri}: {error.message}") from None
    return AlignedModel.load(path)


def candidates(where: dict, modality: str, model: AlignedModel):
    """The stored ``modality`` table of the dataset split, embedded by the model's own encoder."""
    spec = where[f"{modality}_encoder"]
    folder = table_dir(where["store"], where["dataset"], where["split"], modality, encoder_id(spec))
    if not is_complete(folder):
        tables = fs.list_files(fs.parent(folder), recursive=True)  # ENCODER/part-*.parquet, ENCODER/_COMPLETE.json
        others = sorted(fs.name(fs.parent(f)) for f in tables if fs.name(f) == MANIFEST)
        held = (
            f"it holds {modality} embeddings by {', '.join(others)} only"
            if others
            else f"it holds no {modality} embeddings there"
        )
        raise InputError(
            f"store {where['store']} has no {modality} embeddings of {where['dataset']}/{where['split']} by the "
            f"model's encoder {spec} ({held}): the model reads that encoder's embeddings; "
            f"embed them with `{command('embed', '--dataset', where['dataset'], '--encoder', spec, '--out', where['store'])}`"
        )
    table = read_table(folder)
    if table.embeddings.shape[1] != model.spec[f"{modality}_dim"]:
        raise InputError(
            f"{folder} holds {table.embeddings.shape[1]}-dim embeddings, the model reads {model.spec[f'{modality}_dim']}"
        )
    return table
