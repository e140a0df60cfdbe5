"""The content-addressed feature cache: atomic shards, corruption detection, resume, streaming, disk checks."""

from __future__ import annotations

import json
import os
from collections import namedtuple

import numpy as np
import pytest

from tips_bench.cache import CACHE_FORMAT_VERSION, FeatureCache, cache_key
from tips_bench.cache_disk import DiskSpaceError, check_free_space, estimate_bytes, item_bytes
from tips_bench.errors import TipsBenchError


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
    # the interrupted writer released its claim and left no temp folder
    assert not [p.name for p in entry.path.iterdir() if ".claim." in p.name or ".tmp." in p.name]
    # a partial temp folder of a writer that vanished (no claim, older than the stale timeout) is no data
    orphan = entry.path / "shard_00002.tmp.0123abcd"
    (orphan / "feat.npy").parent.mkdir()
    (orphan / "feat.npy").write_bytes(b"partial")
    os.utime(orphan, (0, 0))
    resumed = cache.entry({"x": 2})
    assert [s.index for s in resumed.missing_shards()] == [2]
    calls: list = []
    assert resumed.fill(_produce(calls)) == 4 and calls == [(8, 12)]
    assert not list(entry.path.glob("*.tmp.*"))
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


def test_done_json_records_every_file_and_meta_the_format(tmp_path):
    entry = FeatureCache(tmp_path).entry({"x": 4})
    entry.prepare(5, shard_size=5)
    entry.fill(_produce([]))
    record = json.loads((entry.path / "shard_00000" / "done.json").read_text())
    assert set(record["files"]) == {"feat.npy", "label.npy"}
    assert record["arrays"]["feat"] == {"ragged": False, "dtype": "float16", "shape": [5, 4, 2, 2]}
    assert entry.meta()["format"] == CACHE_FORMAT_VERSION and entry.meta()["users"] == []
    # a different item count under the same key resets the entry (nobody is filling it)
    entry.prepare(3, shard_size=2)
    assert entry.num_items == 3 and [s.index for s in entry.missing_shards()] == [0, 1]


def test_add_user_and_annotate_keep_each_other(tmp_path):
    entry = FeatureCache(tmp_path).entry({"x": 5})
    entry.prepare(4, shard_size=4)
    entry.add_user("toy_seg")
    entry.annotate(fill_images_per_s=3.5)
    entry.add_user("toy_depth")
    entry.add_user("toy_seg")
    assert entry.users() == ["toy_seg", "toy_depth"] and entry.meta()["fill_images_per_s"] == 3.5
    assert entry.last_used() is not None
    assert not list(entry.path.glob("meta.json.*.tmp"))


def test_reading_an_entry_that_nobody_fills_says_so(tmp_path):
    entry = FeatureCache(tmp_path).entry({"x": 6})
    with pytest.raises(TipsBenchError, match="does not exist"):
        entry.read("label")
    entry.prepare(8, shard_size=4)
    calls: list = []

    def half(lo, hi):
        if lo >= 4:
            raise RuntimeError("backbone crashed")
        yield from _produce(calls)(lo, hi)

    with pytest.raises(RuntimeError):
        entry.fill(half)
    reader = FeatureCache(tmp_path).entry({"x": 6})
    with pytest.raises(TipsBenchError, match=r"incomplete \(1 of 2 shards missing or corrupt\) and no process"):
        reader.read("label")


Usage = namedtuple("Usage", "total used free")


def test_free_space_check_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr("tips_bench.cache_disk.shutil.disk_usage", lambda p: Usage(10**12, 0, 5_000_000))
    check_free_space(tmp_path, 4_000_000, reserve_bytes=1_000_000)  # exactly fits
    with pytest.raises(DiskSpaceError) as err:
        check_free_space(tmp_path / "not" / "yet", 4_000_001, reserve_bytes=1_000_000)
    msg = str(err.value)
    assert "needs about 4.0 MB" in msg and "only 5.0 MB is free" in msg and "--cache-dir" in msg
    assert "\n" not in msg
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(DiskSpaceError):
        cache.check_free_space(10**7)


def test_fill_stops_cleanly_when_the_rest_will_not_fit(tmp_path, monkeypatch):
    entry = FeatureCache(tmp_path).entry({"x": 7})
    entry.prepare(12, shard_size=4)
    monkeypatch.setattr("tips_bench.cache_disk.shutil.disk_usage", lambda p: Usage(10**12, 0, 1000))
    calls: list = []
    with pytest.raises(DiskSpaceError):
        entry.fill(_produce(calls))
    assert calls == [(0, 4)] and [s.index for s in entry.missing_shards()] == [1, 2]
    assert not [p for p in entry.path.iterdir() if ".tmp." in p.name or ".claim." in p.name]
    monkeypatch.undo()
    assert FeatureCache(tmp_path).entry({"x": 7}).fill(_produce(calls)) == 8


def test_estimates_cover_what_a_fill_writes(tmp_path):
    per_item = item_bytes({"feat": ((4, 2, 2), np.float16), "label": ((), np.int64)})
    assert per_item == 4 * 2 * 2 * 2 + 8
    entry = FeatureCache(tmp_path).entry({"x": 8})
    entry.prepare(40, shard_size=8)
    estimate = entry.estimate_fill_bytes(per_item)
    assert estimate == estimate_bytes(40, per_item, 8)
    entry.fill(_produce([]))
    written = sum(p.stat().st_size for p in entry.path.glob("shard_*/*"))
    assert written <= estimate
    assert entry.estimate_fill_bytes(per_item) == 0  # nothing left to write
