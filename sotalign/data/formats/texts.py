"""Texts without images (unpaired texts): a ``.txt`` file (one text a line, blank lines skipped) or
a caption column of a ``.jsonl`` / ``.csv`` / ``.parquet`` table that has no image column.

Ids name where a text is in its file, so they stay put when other lines change: ``line<N>`` (1-based,
as editors number lines) for ``.txt``, ``row<N>`` (0-based, as the table readers' errors count rows)
for tables. Rows keep the file's order. An empty text in a table is a bad row. Local or on object
storage (``fs``). Every text is in split ``all``.
"""

from __future__ import annotations

import pyarrow as pa

from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.data.datasets import TextDataset
from sotalign.data.formats.common import report_bad

TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")  # what pyarrow reads (generic.py's table formats)


def read_table(location: str) -> pa.Table:
    """A CSV, JSON Lines or Parquet file as an Arrow table, local or remote."""
    tail = fs.name(location)
    suffix = "." + tail.rsplit(".", 1)[-1].lower() if "." in tail else ""
    if suffix not in TABLE_SUFFIXES:
        raise InputError(
            f"{location}: unsupported text format {suffix or 'no suffix'!r}; use .txt, .csv, .jsonl or .parquet"
        )
    with fs.open_input(location) as f:
        try:
            if suffix == ".csv":
                import pyarrow.csv as pcsv

                return pcsv.read_csv(f)
            if suffix == ".parquet":
                import pyarrow.parquet as pq

                return pq.read_table(f)
            import pyarrow.json as pjson

            return pjson.read_json(f)
        except pa.ArrowInvalid as error:
            raise InputError(f"{location} is not a readable {suffix} table: {error}") from None


def load_texts(location: str, name: str, caption_column: str = "caption", skip_bad: bool = False) -> TextDataset:
    location = str(location)
    bad: list[tuple[str, str]] = []
    if location.lower().endswith(".txt"):
        lines = fs.read_text(location).splitlines()
        kept = [(f"line{n}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    else:
        table = read_table(location)
        if caption_column not in table.column_names:
            raise InputError(f"{location} has no column {caption_column!r}; columns: {', '.join(table.column_names)}")
        kept = []
        for row, value in enumerate(table.column(caption_column).to_pylist()):
            text = str(value).strip() if value is not None else ""
            (kept.append((f"row{row}", text)) if text else bad.append((f"row {row}", "empty caption")))
        report_bad(bad, location, skip_bad)
    if not kept:
        raise InputError(f"{location}: no texts")
    import numpy as np

    source = {"name": location, "format": "texts", "dataset_name": name, "skip_bad": True}
    if not location.lower().endswith(".txt"):
        source["caption_column"] = caption_column
    return TextDataset(
        name=name,
        text_ids=[i for i, _ in kept],
        texts=[t for _, t in kept],
        splits={"all": np.arange(len(kept))},
        skipped=bad,
        source=source,
    )
