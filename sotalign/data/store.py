"""The embedding store: one Parquet table per (encoder, dataset, split).

A table has an ``id`` column (string), an ``embedding`` column (fixed-size list of float32
or float16) and any extra per-row columns (e.g. ``image_id`` for captions, ``label``).
Table-level metadata (encoder id, dim, pooling, dataset, split, ...) is stored as JSON in
the Parquet schema metadata under ``sotalign``. A table lives on a local disk or on object
storage (``sotalign.data.fs``); writes are atomic on both (a local temp file renamed, or one PUT).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sotalign.checks import InputError
from sotalign.data import fs

META_KEY = b"sotalign"


@dataclass
class EmbeddingTable:
    ids: list[str]
    embeddings: torch.Tensor  # (n, dim)
    metadata: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)


def write_embeddings(
    path: str | os.PathLike,
    ids,
    embeddings,
    metadata: dict[str, Any] | None = None,
    columns: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> str:
    """Write one table atomically; ``metadata`` must be JSON-serialisable."""
    emb = np.ascontiguousarray(torch.as_tensor(embeddings).detach().cpu().numpy(), dtype=np.dtype(dtype))
    ids = [str(i) for i in ids]
    if emb.ndim != 2:
        raise InputError(f"embeddings must be 2-D (n, dim), got shape {emb.shape}")
    if len(ids) != emb.shape[0]:
        raise InputError(f"{len(ids)} ids for {emb.shape[0]} embeddings")
    if len(set(ids)) != len(ids):
        raise InputError("ids must be unique within a table")
    if not np.isfinite(emb).all():
        raise InputError("embeddings contain NaN/inf; refusing to store them")
    n, dim = emb.shape
    flat = pa.array(emb.reshape(-1), type=pa.from_numpy_dtype(emb.dtype))
    arrays = {"id": pa.array(ids, pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
    for name, values in (columns or {}).items():
        values = np.asarray(values)
        if len(values) != n:
            raise InputError(f"column {name!r} has {len(values)} values for {n} rows")
        arrays[name] = pa.array(values)
    meta = {**(metadata or {}), "dim": dim, "n": n, "dtype": dtype}
    table = pa.table(arrays).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with fs.atomic_local_path(path) as tmp:
        pq.write_table(table, tmp)
    return str(path)


def _read(read: Callable, path: str | os.PathLike):
    """``read(path, filesystem=...)`` of pyarrow.parquet on the location's filesystem; a missing file or
    an unreachable store becomes an ``InputError`` naming the location."""
    filesystem, inner = fs.resolve(path)
    try:
        return read(inner, filesystem=filesystem)
    except FileNotFoundError:
        raise InputError(f"no embedding table at {path}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {fs.short_error(error)}") from None


def _metadata(schema: pa.Schema, path: str | os.PathLike) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(f"{path} is not a sotalign embedding table (no '{META_KEY.decode()}' metadata)")
    return json.loads(raw)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    return _metadata(_read(pq.read_schema, path), path)


def read_embeddings(path: str | os.PathLike) -> EmbeddingTable:
    """Read a table back (embeddings as float32 tensors)."""
    table = _read(pq.read_table, path)
    meta = _metadata(table.schema, path)
    emb_col = table.column("embedding").combine_chunks()
    emb = emb_col.values.to_numpy(zero_copy_only=False).reshape(len(table), meta["dim"])
    extra = {name: table.column(name).to_numpy() for name in table.column_names if name not in ("id", "embedding")}
    return EmbeddingTable(
        ids=table.column("id").to_pylist(),
        embeddings=torch.from_numpy(emb.astype(np.float32)),
        metadata=meta,
        columns=extra,
    )
