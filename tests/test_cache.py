"""The content-addressed feature cache: atomic shards, corruption detection, resume, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from tips_bench.cache import FeatureCache, cache_key


def _produce(calls: list):
    def produce(lo: int, hi: int):
        calls.append((lo, hi))
        for b in range(lo, hi, 3):
            idx = np.arange(b, min(hi, b + 3))
            yield {"feat": np.stack([np.full((4, 2, 2), i, np.float16) for i in idx]), "label": idx.astype(np.int64)}

    return produce


def test_key_depends_on_every_field_and_not_on_order():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_fill_then_read_back(tmp_path):
    entry = FeatureCache(tmp_path).entry({"x": 1})
    entry.prepare(10, shard_size=4)
    calls: list = []
    assert entry.fill(_produce(calls)) == 10
    assert calls == [(0, 4), (4, 8), (8, 10)]
    assert entry.complete()
    np.testing.assert_array_equal(entry.read("label"), np.arange(10))
    assert entry.item_shape("feat") == (4, 2, 2)
    # a second fill does nothing
    assert entry.fill(_produce(calls)) == 0 and len(calls) == 3


def test_corrupt_shard_is_detected_and_rebuilt(tmp_path):
    cache = FeatureCache(tmp_path)
    entry = cache.entry({"x": 1})
    entry.prepare(10, shard_size=4)
    entry.fill(_produce([]))
    target = entry.path / "shard_00001" / "feat.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the payload: same size, different content
    target.write_bytes(bytes(data))
    fresh = cache.entry({"x": 1})  # a new process would re-verify
    assert [s.index for s in fresh.missing_shards()] == [1]
    calls: list = []
    assert fresh.fill(_produce(calls)) == 4 and calls == [(4, 8)]
    np.testing.assert_array_equal(fresh.read("feat")[:, 0, 0, 0], np.arange(10))


def test_interrupted_fill_resumes_where_it_stopped(tmp_path):
    cache = FeatureCache(tmp_path)
    entry = cache.entry({"x": 2})
    entry.prepare(12, shard_size=4)

    def crashing(lo: int, hi: int):
        if lo >= 8:
            raise KeyboardInterrupt
        yield from _produce([])(lo, hi)

    with pytest.raises(KeyboardInterrupt):
        entry.fill(crashing)
    # a partial temp folder from the crash must not count as data
    (entry.path / "shard_00002.tmp").mkdir(exist_ok=True)
    resumed = cache.entry({"x": 2})
    calls: list = []
    assert resumed.fill(_produce(calls)) == 4 and calls == [(8, 12)]
    assert not list(entry.path.glob("*.tmp"))
    np.testing.assert_array_equal(resumed.read("label"), np.arange(12))


def test_iter_batches_streams_every_row_once_in_seeded_order(tmp_path):
    entry = FeatureCache(tmp_path).entry({"x": 3})
    entry.prepare(10, shard_size=4)
    entry.fill(_produce([]))
    batches = list(entry.iter_batches(["label", "feat"], batch_size=3, seed=7))
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(labels.tolist()) == list(range(10))
    assert all(b["feat"].dtype == np.float32 for b in batches)
    again = np.concatenate([b["label"] for b in entry.iter_batches(["label"], batch_size=3, seed=7)])
    np.testing.assert_array_equal(labels, again)
    plain = np.concatenate([b["label"] for b in entry.iter_batches(["label"], batch_size=3)])
    np.testing.assert_array_equal(plain, np.arange(10))
