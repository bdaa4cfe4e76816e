"""Embedding extraction into the store: one table per (dataset, split, modality, encoder).

A table is a folder of Parquet shards (``part-00000.parquet`` ...) of ``shard_size`` rows each,
plus ``_COMPLETE.json`` once every shard is written. Extraction is resumable: shards already
on disk are checked (same encoder id and dim, same ids) and skipped; a folder holding another
encoder's shards is refused. Ids are deterministic, so a resumed or distributed run (the Ray
Data job in ``orchestrator``) writes the same table as a local one. The manifest is written last
and atomically, and readers read complete tables only, so a reader never sees a table half-written.

Layout: ``<store>/<dataset>/<split>/<modality>/<encoder slug>/``, where the store is a local
folder or an object-store URI (``s3://bucket/store``; ``sotalign.data.fs``): locations are strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import AnyDataset, ClassificationDataset, ImageDataset, TextDataset
from sotalign.data.store import EmbeddingTable, read_embeddings, read_metadata, write_embeddings
from sotalign.encoders import Encoder

MANIFEST = "_COMPLETE.json"
SHARD_SIZE = 1024  # rows per Parquet shard: the unit of resumption and of distributed work
READ_THREADS = 8  # shards read at once by read_table (benchmarks/store_read.py)


def encoder_slug(encoder_id: str) -> str:
    """A filesystem-safe, collision-free folder name for an encoder id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:80].strip("_")
    return f"{readable}-{hashlib.sha1(encoder_id.encode()).hexdigest()[:8]}"


def table_dir(store: str | os.PathLike, dataset: str, split: str, modality: str, encoder_id: str) -> str:
    return fs.join(store, dataset, split, modality, encoder_slug(encoder_id))


def shard_path(folder: str | os.PathLike, index: int) -> str:
    return fs.join(folder, f"part-{index:05d}.parquet")


def shard_ranges(n_rows: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, n_rows)) for start in range(0, n_rows, shard_size)]


def check_existing_shard(path: str, encoder: Encoder, content: str) -> bool:
    """True if ``path`` already holds this shard (same encoder, same content fingerprint);
    raise if it holds something else."""
    if not fs.is_file(path):
        return False
    meta = read_metadata(path)
    if meta.get("encoder") != encoder.id or meta.get("dim") != encoder.dim:
        raise InputError(
            f"{path} holds embeddings of {meta.get('encoder')!r} (dim {meta.get('dim')}), not of "
            f"{encoder.id!r} (dim {encoder.dim}); refusing to mix encoders in one table"
        )
    if meta.get("fingerprint") != content:
        raise InputError(
            f"{path} holds other content than this extraction would write (the dataset changed, or two "
            f"datasets share the name {meta.get('dataset')!r}); delete {fs.parent(path)} or use another store"
        )
    return True


def embed_shard(
    encoder: Encoder,
    load: Callable[[int], object],
    ids: Sequence[str],
    folder: str,
    index: int,
    *,
    metadata: dict,
    columns: dict[str, np.ndarray],
    keys: Sequence[str],
    batch_size: int = 64,
    shard_size: int = SHARD_SIZE,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write shard ``index`` (rows ``index * shard_size`` ...) unless it is already there.

    Returns the number of rows embedded (0 for a shard found on disk). The same function
    runs in the local loop and in the Ray actors, so both write identical shards.
    """
    start, stop = index * shard_size, min((index + 1) * shard_size, len(ids))
    path = shard_path(folder, index)
    content = fingerprint(keys[start:stop])
    if check_existing_shard(path, encoder, content):
        return 0
    chunks = []
    for b in range(start, stop, batch_size):
        chunks.append(encoder.embed([load(i) for i in range(b, min(b + batch_size, stop))]))
        if on_rows is not None:
            on_rows(min(b + batch_size, stop) - b)
    write_shard(
        path,
        encoder,
        ids[start:stop],
        torch.cat(chunks),
        {**metadata, "fingerprint": content},
        {k: v[start:stop] for k, v in columns.items()},
    )
    return stop - start


def embed_rows(
    encoder: Encoder,
    load: Callable[[int], object],
    ids: Sequence[str],
    folder: str | os.PathLike,
    *,
    metadata: dict,
    keys: Sequence[str],
    columns: dict[str, np.ndarray] | None = None,
    batch_size: int = 64,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
) -> str:
    """Embed row i = ``load(i)`` for every id into sharded Parquet under ``folder``.

    ``keys[i]`` describes row i's content (its caption, its image path); shards and the
    manifest record a fingerprint of them.
    """
    folder = str(folder)
    ranges = shard_ranges(len(ids), shard_size)
    n_shards = len(ranges)
    bar = tqdm(
        total=len(ids),
        desc=f"{metadata.get('dataset', '')}/{metadata.get('split', '')} {encoder.modality}",
        unit=encoder.modality,
        disable=not progress,
    )
    for index in range(n_shards):
        done = embed_shard(
            encoder,
            load,
            ids,
            folder,
            index,
            metadata=metadata,
            columns=columns or {},
            keys=keys,
            batch_size=batch_size,
            shard_size=shard_size,
            on_rows=bar.update,
        )
        if not done:
            bar.update(ranges[index][1] - ranges[index][0])
    bar.close()
    write_manifest(
        folder,
        encoder.id,
        encoder.modality,
        encoder.dim,
        len(ids),
        n_shards,
        {**metadata, "fingerprint": fingerprint(keys)},
    )
    return folder


def write_shard(path: str, encoder: Encoder, ids, embeddings: torch.Tensor, metadata: dict, columns: dict) -> None:
    write_embeddings(
        path,
        ids,
        embeddings,
        metadata={**metadata, "encoder": encoder.id, "modality": encoder.modality},
        columns=columns,
    )


def write_manifest(
    folder: str | os.PathLike, encoder_id: str, modality: str, dim: int, n_rows: int, n_shards: int, metadata: dict
) -> None:
    """Mark a table complete: written last, after every shard."""
    manifest = {**metadata, "encoder": encoder_id, "modality": modality, "dim": dim, "n": n_rows, "shards": n_shards}
    fs.write_bytes(fs.join(folder, MANIFEST), json.dumps(manifest, indent=2).encode())


def is_complete(folder: str | os.PathLike) -> bool:
    return fs.is_file(fs.join(folder, MANIFEST))


def read_table(folder: str | os.PathLike) -> EmbeddingTable:
    """All shards of a complete table, concatenated in order."""
    if not is_complete(folder):
        raise InputError(f"no complete embedding table at {folder} (run `sotalign embed` first, or let it finish)")
    manifest = json.loads(fs.read_text(fs.join(folder, MANIFEST)))
    with ThreadPoolExecutor(READ_THREADS) as pool:  # pyarrow reads without the GIL: overlaps object-store latency
        parts = list(pool.map(read_embeddings, [shard_path(folder, i) for i in range(manifest["shards"])]))
    columns = {k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns}
    table = EmbeddingTable(
        ids=[i for p in parts for i in p.ids],
        embeddings=torch.cat([p.embeddings for p in parts]),
        metadata=manifest,
        columns=columns,
    )
    if len(table.ids) != manifest["n"]:
        raise InputError(f"{folder}: the manifest promises {manifest['n']} rows, the shards hold {len(table.ids)}")
    return table


def dataset_rows(dataset: AnyDataset, split: str, modality: str):
    """(table split name, row loader, ids, extra columns, content keys) for one modality of a split.

    Captions carry the id of their image (``image_id``); class prompts carry ``label`` and
    ``template`` and live in the split ``classes`` whatever split is asked for. Content keys
    (caption or prompt text, image path) fingerprint what each row embeds, so that a table is
    never reused for different content under the same ids. Images carry the dataset's
    ``image_columns``; with ``image_concept`` both images and captions carry their ``concept``,
    which then is part of the content keys (regrouped concepts rewrite the tables). An image-only
    dataset has image rows only (``DATASET/IMAGE_ID``), a text-only one text rows only
    (``DATASET/TEXT_ID``, keyed by the text).
    """
    name = dataset.name
    if modality not in dataset.modalities:
        kind = "image-only" if modality == "text" else "text-only"
        raise InputError(
            f"dataset {name!r} has no {modality}s ({kind}): embed it with an encoder of {dataset.modalities}"
        )
    if isinstance(dataset, ImageDataset):
        rows = dataset.split_indices(split)
        keys = [dataset.image_ids[i] for i in rows]
        return split, lambda k: dataset.load_image(int(rows[k])), [f"{name}/{key}" for key in keys], {}, keys
    if isinstance(dataset, TextDataset):
        rows = dataset.split_indices(split)
        texts = [dataset.texts[i] for i in rows]
        return split, texts.__getitem__, [f"{name}/{dataset.text_ids[i]}" for i in rows], {}, texts
    if isinstance(dataset, ClassificationDataset):
        if modality == "text":
            prompts = dataset.prompts()
            n_t = len(dataset.templates)
            ids = [f"{name}/class={i // n_t}/template={i % n_t}" for i in range(len(prompts))]
            cols = {"label": np.arange(len(prompts)) // n_t, "template": np.arange(len(prompts)) % n_t}
            return "classes", prompts.__getitem__, ids, cols, prompts
        rows = dataset.split_indices(split)
        ids = [f"{name}/{dataset.image_ids[i]}" for i in rows]
        return (
            split,
            lambda k: dataset.load_image(int(rows[k])),
            ids,
            {"label": dataset.labels[rows]},
            [dataset.image_ids[i] for i in rows],
        )
    images, captions = dataset.split_indices(split)
    concept = dataset.image_concept
    if modality == "image":
        ids = [f"{name}/{dataset.image_ids[i]}" for i in images]
        columns = {key: values[images] for key, values in dataset.image_columns.items()}
        keys = [dataset.image_ids[i] for i in images]
        if concept is not None:
            columns["concept"] = concept[images]
            keys = [f"{key}\t{c}" for key, c in zip(keys, concept[images])]
        return split, lambda k: dataset.load_image(int(images[k])), ids, columns, keys
    owners = dataset.caption_image[captions]
    seen: dict[int, int] = {}
    ids = []
    for owner in owners:  # k-th caption of its image, wherever its rows are
        seen[owner] = seen.get(owner, -1) + 1
        ids.append(f"{name}/{dataset.image_ids[owner]}#{seen[owner]}")
    columns = {"image_id": np.asarray([f"{name}/{dataset.image_ids[o]}" for o in owners])}
    texts = [dataset.captions[int(c)] for c in captions]
    keys = texts
    if concept is not None:
        columns["concept"] = concept[owners]
        keys = [f"{text}\t{c}" for text, c in zip(texts, concept[owners])]
    return split, texts.__getitem__, ids, columns, keys


def fingerprint(keys: Sequence[str]) -> str:
    return hashlib.sha1("\x1f".join(keys).encode()).hexdigest()


def stored_table(
    dataset: AnyDataset, split: str, modality: str, encoder_id: str, store: str | os.PathLike
) -> str | None:
    """The folder of the complete table of this split, modality and encoder id, if the store holds
    it with the dataset's current content (same fingerprint); else None."""
    table_split, _, _, _, keys = dataset_rows(dataset, split, modality)
    folder = table_dir(store, dataset.name, table_split, modality, encoder_id)
    if not is_complete(folder):
        return None
    manifest = json.loads(fs.read_text(fs.join(folder, MANIFEST)))
    return (
        folder if manifest.get("encoder") == encoder_id and manifest.get("fingerprint") == fingerprint(keys) else None
    )


def embed_dataset(
    dataset: AnyDataset,
    split: str,
    encoder: Encoder,
    store: str | os.PathLike,
    **options,
) -> str:
    """Embed one split of ``dataset`` with ``encoder`` into ``store``; returns the table folder."""
    stored = stored_table(dataset, split, encoder.modality, encoder.id, store)
    if stored is not None:
        return stored
    table_split, load, ids, columns, keys = dataset_rows(dataset, split, encoder.modality)
    folder = table_dir(store, dataset.name, table_split, encoder.modality, encoder.id)
    metadata = table_metadata(dataset, table_split)
    return embed_rows(encoder, load, ids, folder, metadata=metadata, columns=columns, keys=keys, **options)


def table_metadata(dataset: AnyDataset, table_split: str) -> dict:
    """What a table records of its dataset: name, split and, for a user's table file, its path."""
    source = getattr(dataset, "source", None)
    return {"dataset": dataset.name, "split": table_split, **({"source": source} if source else {})}
