"""Ragged arrays in the feature cache: items of any shape (ndim 0..4), stored without padding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tips_bench.cache import FeatureCache


def ragged_shape(i: int) -> tuple[int, ...]:
    """Item i's shape: ndim i % 5, some dimensions 0 (empty items)."""
    return tuple((i + 2 * d) % 4 for d in range(i % 5))


def tok(i: int) -> np.ndarray:
    shape = ragged_shape(i)
    return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) + 1000 * i).astype(np.float16)


def produce(lo: int, hi: int, batch: int = 3):
    for b in range(lo, hi, batch):
        idx = range(b, min(hi, b + batch))
        yield {"label": np.asarray(idx, dtype=np.int64),
               "tok": [tok(i) for i in idx],
               "ids": [np.full(i % 3, i, dtype=np.int32) for i in idx]}


@pytest.fixture
def entry(tmp_path):
    e = FeatureCache(tmp_path).entry({"ragged": 1})
    e.prepare(13, shard_size=5)
    assert e.fill(produce, progress=False) == 13
    return FeatureCache(tmp_path).entry({"ragged": 1})  # a fresh reader verifies every shard


def test_read_returns_every_item_with_its_shape_and_values(entry):
    items = entry.read("tok")
    assert isinstance(items, list) and len(items) == 13
    for i, item in enumerate(items):
        assert item.shape == ragged_shape(i) and item.dtype == np.float16
        np.testing.assert_array_equal(item, tok(i))
    assert {item.ndim for item in items} == {0, 1, 2, 3, 4} and any(item.size == 0 for item in items)
    assert entry.is_ragged("tok") and not entry.is_ragged("label")
    assert entry.item_shapes("tok") == [ragged_shape(i) for i in range(13)]
    assert entry.item_shapes("label") == [()] * 13
    assert entry.item_shape("label") == ()
    with pytest.raises(ValueError, match="ragged.*item_shapes"):
        entry.item_shape("tok")
    # floating items cast on request, integer items never
    assert all(x.dtype == np.float32 for x in entry.read("tok", dtype=np.float32))
    assert all(x.dtype == np.int32 for x in entry.read("ids", dtype=np.float32))


def test_storage_has_no_padding_and_is_recorded(entry):
    shard = entry.path / "shard_00000"
    record = json.loads((shard / "done.json").read_text())
    assert record["arrays"]["tok"] == {"ragged": True, "dtype": "float16",
                                       "elements": sum(int(np.prod(ragged_shape(i))) for i in range(5)),
                                       "max_ndim": 4}
    assert set(record["files"]) == {"label.npy", "tok.npy", "tok.shapes.npy", "ids.npy", "ids.shapes.npy"}
    data = np.load(shard / "tok.npy")
    assert data.ndim == 1 and data.nbytes == 2 * record["arrays"]["tok"]["elements"]
    shapes = np.load(shard / "tok.shapes.npy")
    assert shapes.dtype == np.int64 and shapes.shape == (5, 4)
    assert shapes[0].tolist() == [-1, -1, -1, -1] and shapes[2].tolist() == [2, 0, -1, -1]


def test_iter_batches_keeps_ragged_rows_aligned_and_copies(entry):
    seen = []
    for batch in entry.iter_batches(["label", "tok"], batch_size=4, seed=3):
        assert isinstance(batch["tok"], list) and len(batch["tok"]) == len(batch["label"])
        for label, item in zip(batch["label"], batch["tok"], strict=True):
            assert item.dtype == np.float32 and item.flags.writeable and item.flags.owndata
            np.testing.assert_array_equal(item, tok(int(label)).astype(np.float32))
        seen += batch["label"].tolist()
    assert sorted(seen) == list(range(13)) and seen != list(range(13))
    half = next(entry.iter_batches(["tok"], batch_size=13, dtype=None))["tok"]
    assert [x.dtype for x in half] == [np.float16] * 5  # first shard, no cast


def test_a_corrupt_shapes_table_is_caught_and_rebuilt(entry):
    target = entry.path / "shard_00001" / "tok.shapes.npy"
    raw = bytearray(target.read_bytes())
    raw[-8] ^= 0x01
    target.write_bytes(bytes(raw))
    fresh = FeatureCache(entry.path.parent).entry({"ragged": 1})
    assert [s.index for s in fresh.missing_shards()] == [1]
    assert fresh.fill(produce, progress=False) == 5
    assert fresh.item_shapes("tok") == [ragged_shape(i) for i in range(13)]


def test_a_name_is_fixed_or_ragged_throughout(tmp_path):
    e = FeatureCache(tmp_path).entry({"ragged": 2})
    e.prepare(6, shard_size=3)

    def mixed_batches(lo, hi):
        yield {"x": [np.zeros(2)]}
        yield {"x": np.zeros((hi - lo - 1, 2))}

    with pytest.raises(ValueError, match="ragged"):
        e.fill(mixed_batches, progress=False)

    def by_shard(lo, hi):
        n = hi - lo
        yield {"x": np.zeros((n, 2))} if lo == 0 else {"x": [np.zeros(2)] * n}

    with pytest.raises(ValueError, match="fixed .* in this entry's other shards"):
        e.fill(by_shard, progress=False)
    fresh = FeatureCache(tmp_path).entry({"ragged": 3})
    fresh.prepare(3, shard_size=3)
    with pytest.raises(ValueError, match="mixes dtypes"):
        fresh.write_shard(fresh.shards()[0], {"y": [np.zeros(1, np.float32), np.zeros(1, np.float64), np.zeros(1)]})
    with pytest.raises(ValueError, match="must be letters"):
        fresh.write_shard(fresh.shards()[0], {"../y": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="got no arrays"):
        fresh.fill(lambda lo, hi: iter(()), progress=False)
    with pytest.raises(ValueError, match=r"got arrays \['y'\]; the entry holds \['x'\]"):
        e.write_shard(e.shards()[1], {"y": np.zeros((3, 1))})
    for entry in (e, fresh):
        assert not [p for p in entry.path.iterdir() if ".tmp." in p.name or ".claim." in p.name]
