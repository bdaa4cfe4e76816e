"""``sotalign embed --ray``: the extraction as a Ray Data job over an actor pool of encoders.

Every actor gets the dataset description and loads one encoder (one GPU per actor on a cluster),
then writes whole shards with ``sotalign.data.extract.embed_shard``, the function the local
path uses, so the store is the same either way; shards already on disk are skipped (resume).
A user's dataset is read and checked once, on the driver, and its description (an index of
paths, shard offsets and captions: kilobytes) shipped to the actors, which read only their own
rows' images: a WebDataset on object storage is not downloaded again by every actor. A bundled
dataset is loaded by name in each actor.
The driver writes the table's manifest once every shard is in. The store must be on storage
that every node sees (``s3://...``, NFS) on a multi-node cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from orchestrator.cluster import connect_ray
from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import AnyDataset
from sotalign.data.extract import (
    dataset_rows,
    embed_shard,
    fingerprint,
    shard_path,
    shard_ranges,
    table_dir,
    table_metadata,
    write_manifest,
)
from sotalign.data.registry import BUNDLED, is_iconify, load_dataset
from sotalign.encoders import load_encoder, spec_modality


class ShardEmbedder:
    """A Ray Data actor: one encoder, called with batches of shard indices."""

    def __init__(
        self,
        dataset: str | AnyDataset,
        dataset_options: dict,
        split: str,
        encoder: str,
        device: str,
        store: str,
        batch_size: int,
        shard_size: int,
    ):
        data = load_dataset(dataset, **dataset_options) if isinstance(dataset, str) else dataset
        self.encoder = load_encoder(encoder, device=device)
        table_split, self.load, self.ids, self.columns, self.keys = dataset_rows(data, split, self.encoder.modality)
        self.folder = table_dir(store, data.name, table_split, self.encoder.modality, self.encoder.id)
        self.metadata = table_metadata(data, table_split)
        self.batch_size, self.shard_size = batch_size, shard_size

    def __call__(self, batch: dict) -> dict:
        rows = [
            embed_shard(
                self.encoder,
                self.load,
                self.ids,
                self.folder,
                int(index),
                metadata=self.metadata,
                columns=self.columns,
                keys=self.keys,
                batch_size=self.batch_size,
                shard_size=self.shard_size,
            )
            for index in batch["shard"]
        ]
        n = len(rows)
        return {
            "shard": np.asarray(batch["shard"]),
            "rows": np.asarray(rows),
            "encoder": np.asarray([self.encoder.id] * n),
            "dim": np.asarray([self.encoder.dim] * n),
            "folder": np.asarray([str(self.folder)] * n),
        }


def embed_with_ray(
    dataset: str,
    split: str,
    encoder: str,
    store: str | Path,
    *,
    dataset_options: dict | None = None,
    loaded: AnyDataset | None = None,
    actors: int = 2,
    gpus_per_actor: float = 0.0,
    device: str = "auto",
    batch_size: int = 64,
    shard_size: int | None = None,
) -> str:
    """Run the extraction of one split on the connected Ray cluster; returns the table folder.
    ``loaded``: the dataset as the caller already read it, from an absolute location (else it is read here)."""
    import ray
    import ray.data

    from sotalign.data.extract import SHARD_SIZE

    shard_size = shard_size or SHARD_SIZE
    dataset_options = dataset_options or {}
    connect_ray()  # a cluster that refuses this driver's token says so (exit 2)
    modality = spec_modality(encoder)
    if dataset not in BUNDLED and not is_iconify(dataset) and not fs.is_remote(dataset):
        dataset = os.path.abspath(dataset)  # actors may run in another working directory (a shard pattern too)
    data = loaded or load_dataset(dataset, **dataset_options)
    table_split, _, ids, _, keys = dataset_rows(data, split, modality)
    n_shards = len(shard_ranges(len(ids), shard_size))
    kwargs = dict(
        dataset=dataset if dataset in BUNDLED or is_iconify(dataset) else data,  # a user's: read once, here
        dataset_options=dataset_options,
        split=split,
        encoder=encoder,
        device="cuda" if gpus_per_actor else device,
        store=fs.absolute(store),
        batch_size=batch_size,
        shard_size=shard_size,
    )
    results = (
        ray.data.from_items([{"shard": k} for k in range(n_shards)])
        .map_batches(
            ShardEmbedder,
            fn_constructor_kwargs=kwargs,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(actors, n_shards)),
            num_cpus=1,
            num_gpus=gpus_per_actor,
        )
        .take_all()
    )
    if sorted(int(r["shard"]) for r in results) != list(range(n_shards)):
        raise RuntimeError(
            f"the Ray job returned shards {sorted(int(r['shard']) for r in results)}, expected 0..{n_shards - 1}"
        )
    encoder_id, dim, folder = results[0]["encoder"], int(results[0]["dim"]), str(results[0]["folder"])
    missing = [k for k in range(n_shards) if not fs.is_file(shard_path(folder, k))]
    if missing:  # written on another node's disk: a manifest here would promise what this store lacks
        raise InputError(
            f"{len(missing)} of {n_shards} shards of {folder} are not in the store as this node sees it (first: "
            f"part-{missing[0]:05d}): the actors wrote them on other nodes' disks. Embed into storage every node "
            "shares (--out s3://BUCKET/store, or an NFS folder)"
        )
    write_manifest(
        folder,
        str(encoder_id),
        modality,
        dim,
        len(ids),
        n_shards,
        {**table_metadata(data, table_split), "fingerprint": fingerprint(keys)},
    )
    return folder
