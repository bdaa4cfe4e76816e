"""The Parquet embedding store: round trip, metadata, atomic writes, refusals."""

import pytest
import torch

from sotalign.data.store import read_embeddings, read_metadata, write_embeddings


def test_round_trip_with_metadata_and_columns(tmp_path):
    emb = torch.randn(5, 7)
    path = write_embeddings(
        tmp_path / "t.parquet",
        [f"img-{i}" for i in range(5)],
        emb,
        metadata={"encoder": "timm:vit_tiny", "pooling": "cls", "dataset": "toy", "split": "train"},
        columns={"image_id": [0, 0, 1, 2, 2], "caption": ["a", "b", "c", "d", "e"]},
    )
    table = read_embeddings(path)
    assert table.ids == [f"img-{i}" for i in range(5)]
    assert torch.equal(table.embeddings, emb)
    assert table.metadata["encoder"] == "timm:vit_tiny" and table.metadata["dim"] == 7 and table.metadata["n"] == 5
    assert table.columns["image_id"].tolist() == [0, 0, 1, 2, 2]
    assert table.columns["caption"].tolist() == ["a", "b", "c", "d", "e"]
    assert read_metadata(path)["split"] == "train"


def test_float16_storage_is_read_back_as_float32(tmp_path):
    emb = torch.randn(4, 3)
    table = read_embeddings(write_embeddings(tmp_path / "h.parquet", range(4), emb, dtype="float16"))
    assert table.embeddings.dtype == torch.float32
    assert torch.allclose(table.embeddings, emb, atol=1e-2)


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    path = write_embeddings(tmp_path / "t.parquet", ["a", "b"], torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        write_embeddings(path, ["a", "b"], torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="column 'label' has 1 values for 2 rows"):
        write_embeddings(path, ["a", "b"], torch.zeros(2, 3), columns={"label": [1]})
    assert torch.equal(read_embeddings(path).embeddings, torch.ones(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="3 ids for 2 embeddings"):
        write_embeddings(tmp_path / "x.parquet", ["a", "b", "c"], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unique"):
        write_embeddings(tmp_path / "x.parquet", ["a", "a"], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no embedding table"):
        read_embeddings(tmp_path / "missing.parquet")
