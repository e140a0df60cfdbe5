"""Many writers on one cache entry: claims, take-over of dead writers' shards, waiting readers.

The writers are separate Python processes running this file as a script (``worker`` mode), so
claims, pids and crashes are real. Run alone: ``python -m pytest -q tests/test_cache_concurrency.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tips_bench import cache_claims as claims
from tips_bench.cache import FeatureCache
from tips_bench.errors import TipsBenchError

FIELDS = {"backbone": "stress", "dataset": {"name": "synthetic", "split": "train"}}
N_ITEMS, SHARD = 48, 2
FAST = claims.ClaimPolicy(heartbeat_s=0.1, stale_after_s=30.0)  # dead local pids are stale at once


def items(lo: int, hi: int) -> dict:
    """The deterministic producer's arrays for items lo..hi: fixed, integer and ragged."""
    idx = np.arange(lo, hi)
    return {"feat": (idx[:, None, None] * 10 + np.arange(6).reshape(1, 2, 3)).astype(np.float16),
            "label": idx.astype(np.int64),
            "tok": [np.full((i % 4, i % 3 + 1)[: i % 3], i, dtype=np.float32) for i in idx]}


def _log(path: str, lo: int, hi: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {lo} {hi}\n".encode())
    finally:
        os.close(fd)


def _worker(root: str, log: str, go: str, mode: str, name: str) -> None:
    """One writer process: wait for the start signal, prepare, fill, record itself as a user."""
    while not os.path.exists(go):
        time.sleep(0.002)
    entry = FeatureCache(root, policy=FAST).entry(FIELDS)
    entry.prepare(N_ITEMS, SHARD)
    first = True

    def produce(lo: int, hi: int):
        nonlocal first
        _log(log, lo, hi)
        if mode == "die" and lo == 2:
            os._exit(3)  # killed while extracting: its claim stays behind
        if mode == "stress" and first:  # hold a claim until all four writers hold one
            first = False
            Path(f"{go}.{os.getpid()}").touch()
            deadline = time.monotonic() + 20
            while len(list(Path(go).parent.glob(Path(go).name + ".*"))) < 4 and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(0.01)
        yield items(lo, hi)

    if mode == "die-writing":  # killed in the middle of writing shard 1: claim and temp folder stay behind
        import tips_bench.cache as cache_module

        real = cache_module.write_array

        def write_then_die(folder, array, value):
            if folder.name.startswith("shard_00001.tmp.") and array == "label":
                os._exit(4)
            return real(folder, array, value)

        cache_module.write_array = write_then_die
    done = entry.fill(produce, progress=False)
    entry.add_user(name)
    print(json.dumps({"pid": os.getpid(), "done": done}))


def _spawn(tmp_path: Path, mode: str, name: str) -> subprocess.Popen:
    args = [sys.executable, __file__, str(tmp_path / "cache"), str(tmp_path / "produce.log"), str(tmp_path / "go"),
            mode, name]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _calls(tmp_path: Path) -> list[tuple[int, int, int]]:
    lines = (tmp_path / "produce.log").read_text().split("\n")
    return [tuple(int(v) for v in line.split()) for line in lines if line]


def _scratch(entry) -> list[str]:
    return sorted(p.name for p in entry.path.iterdir() if ".claim." in p.name or ".tmp." in p.name
                  or ".bad." in p.name)


def _assert_same_as_single_writer(entry, tmp_path: Path) -> None:
    ref = FeatureCache(tmp_path / "reference").entry(FIELDS)
    ref.prepare(N_ITEMS, SHARD)
    ref.fill(lambda lo, hi: iter([items(lo, hi)]), progress=False)
    for name in ("feat", "label"):
        np.testing.assert_array_equal(entry.read(name), ref.read(name))
    got, want = entry.read("tok"), ref.read("tok")
    assert [x.shape for x in got] == [x.shape for x in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_four_processes_fill_one_cold_entry_each_shard_once(tmp_path):
    procs = [_spawn(tmp_path, "stress", f"task{k}") for k in range(4)]
    time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    calls = _calls(tmp_path)
    shards = Counter((lo, hi) for _, lo, hi in calls)
    assert set(shards) == {(lo, min(lo + SHARD, N_ITEMS)) for lo in range(0, N_ITEMS, SHARD)}
    assert max(shards.values()) == 1, "a shard was extracted twice"
    assert len({pid for pid, _, _ in calls}) == 4  # all four wrote shards
    assert sum(r["done"] for r in reports) == N_ITEMS
    entry = FeatureCache(tmp_path / "cache").entry(FIELDS)
    assert entry.complete() and entry.verify() == [] and _scratch(entry) == []
    assert sorted(entry.users()) == ["task0", "task1", "task2", "task3"]
    _assert_same_as_single_writer(entry, tmp_path)


@pytest.mark.parametrize("mode", ["die", "die-writing"])
def test_a_dead_writers_claim_is_taken_over(tmp_path, mode):
    (tmp_path / "go").touch()
    proc = _spawn(tmp_path, mode, "dead")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (3, 4), err
    entry = FeatureCache(tmp_path / "cache", policy=FAST).entry(FIELDS)
    left = _scratch(entry)
    assert "shard_00001.claim.0" in left
    if mode == "die-writing":
        assert any(n.startswith("shard_00001.tmp.") for n in left)
    info = claims.read_claim(entry.path / "shard_00001.claim.0")
    assert info.pid == proc.pid and info.owner_alive() is False and info.stale(FAST)
    start = time.monotonic()
    calls: list = []

    def produce(lo, hi):
        calls.append(lo)
        yield items(lo, hi)

    assert entry.fill(produce, progress=False) == N_ITEMS - 2
    assert time.monotonic() - start < 15  # a dead pid on this host is stale at once, no 30 s heartbeat timeout
    assert calls[0] == 2 and _scratch(entry) == []
    assert FeatureCache(tmp_path / "cache").entry(FIELDS).complete()
    _assert_same_as_single_writer(entry, tmp_path)


def _fake_claim(entry, stem: str, host: str, age_s: float) -> Path:
    path = entry.path / f"{stem}.claim.0"
    path.write_text(json.dumps({"token": "feedbeef", "pid": 4242, "host": host, "pidns": "", "started": 0.0}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_claims_of_other_hosts_are_waited_for_until_their_heartbeat_stops(tmp_path):
    cache = FeatureCache(tmp_path, policy=FAST, wait_timeout_s=0.3)
    entry = cache.entry(FIELDS)
    entry.prepare(6, SHARD)
    _fake_claim(entry, "shard_00001", "other-host", age_s=0)
    produced: list = []

    def produce(lo, hi):
        produced.append(lo)
        yield items(lo, hi)

    with pytest.raises(TipsBenchError, match=r"still being filled by pid 4242 on host other-host \(1 shard"):
        entry.fill(produce, progress=False, timeout_s=0.3)
    assert produced == [0, 4]
    with pytest.raises(TipsBenchError, match="still being filled by pid 4242 on host other-host"):
        cache.entry(FIELDS).read("label")
    # the other host's heartbeat stops: after the timeout its claim is taken over
    _fake_claim(entry, "shard_00001", "other-host", age_s=FAST.stale_after_s + 1)
    assert entry.fill(produce, progress=False) == 2 and produced == [0, 4, 2]
    assert _scratch(entry) == [] and entry.complete()


def test_a_reader_waits_for_a_live_writer(tmp_path):
    cache = FeatureCache(tmp_path, policy=FAST, wait_timeout_s=10)
    writer = cache.entry(FIELDS)
    writer.prepare(4, SHARD)
    shard0, shard1 = writer.shards()
    writer.write_shard(shard0, items(0, 2))
    claim = claims.acquire(writer.path, shard1.path.name, writer.token, FAST)
    assert isinstance(claim, claims.Claim)

    def finish():
        time.sleep(0.3)
        writer.write_shard(shard1, items(2, 4))
        claim.release()

    thread = threading.Thread(target=finish)
    thread.start()
    start = time.monotonic()
    labels = cache.entry(FIELDS).read("label")
    thread.join()
    assert time.monotonic() - start >= 0.25
    np.testing.assert_array_equal(labels, np.arange(4))


def test_claims_exclude_each_other_and_heartbeat(tmp_path):
    first = claims.acquire(tmp_path, "shard_00000", "aaaa", FAST)
    assert isinstance(first, claims.Claim)
    other = claims.acquire(tmp_path, "shard_00000", "bbbb", FAST)
    assert isinstance(other, claims.ClaimInfo) and other.token == "aaaa" and other.owner_alive()
    os.utime(first.path, (0, 0))
    deadline = time.monotonic() + 10
    while first.path.stat().st_mtime == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.time() - first.path.stat().st_mtime < 10  # refreshed by the heartbeat thread
    first.release()
    assert not first.path.exists()
    second = claims.acquire(tmp_path, "shard_00000", "cccc", FAST)
    assert isinstance(second, claims.Claim) and second.path.name == "shard_00000.claim.0"
    second.release()


def test_a_crash_in_produce_leaves_the_entry_fillable(tmp_path):
    cache = FeatureCache(tmp_path, policy=FAST)
    entry = cache.entry(FIELDS)
    entry.prepare(8, SHARD)

    def crashing(lo, hi):
        if lo == 4:
            raise RuntimeError("out of memory in the backbone")
        yield items(lo, hi)

    with pytest.raises(RuntimeError):
        entry.fill(crashing, progress=False)
    assert _scratch(entry) == []
    calls: list = []

    def produce(lo, hi):
        calls.append(lo)
        yield items(lo, hi)

    assert cache.entry(FIELDS).fill(produce, progress=False) == 4 and calls == [4, 6]
    np.testing.assert_array_equal(cache.entry(FIELDS).read("label"), np.arange(8))


if __name__ == "__main__":
    _worker(*sys.argv[1:6])
