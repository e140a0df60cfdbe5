"""``tips-bench cache ls | du | rm | verify`` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tips_bench import cache_claims as claims
from tips_bench.cache import FeatureCache
from tips_bench.cli import main

SEG = {"weights": "random-init:tips_s14:0", "backbone": "tips_s14", "resolution": [224, 224],
       "dataset": {"name": "synthetic_scenes", "split": "train", "len": 6}, "pipeline": 1}
PIX = {"weights": "pixels", "backbone": "pixels", "resolution": [112, 168],
       "dataset": {"name": "synthetic_scenes", "split": "eval", "len": 6}, "pipeline": 1}
TEXT = {"weights": "random-init:tips_s14:0", "backbone": "tips_s14", "texts": "abc", "count": 3, "kind": "text",
        "pipeline": 1}


def produce(lo: int, hi: int):
    idx = np.arange(lo, hi)
    yield {"feat": np.repeat(idx[:, None], 8, axis=1).astype(np.float16), "label": idx.astype(np.int64)}


@pytest.fixture
def cache_dir(tmp_path):
    root = tmp_path / "cache"
    cache = FeatureCache(root)
    for fields, users in ((SEG, ["toy_seg", "toy_depth"]), (PIX, ["toy_seg"]), (TEXT, [])):
        entry = cache.entry(fields)
        entry.prepare(6 if fields is not TEXT else 3, shard_size=3)
        entry.fill(produce, progress=False)
        for user in users:
            entry.add_user(user)
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["cache", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _key(root, fields) -> str:
    return FeatureCache(root).entry(fields).key


def test_ls_lists_every_entry_with_its_facts(cache_dir, capsys):
    rc, out, _ = _run(capsys, "ls", "--cache-dir", str(cache_dir))
    assert rc == 0
    for fields in (SEG, PIX, TEXT):
        assert _key(cache_dir, fields) in out
    assert "tips_s14+random" in out and "synthetic_scenes/train" in out and "112x168" in out
    assert "texts (3)" in out and "toy_seg, toy_depth" in out and out.count("complete") == 3
    assert "3 entries" in out
    rc, out, _ = _run(capsys, "ls", "--cache-dir", str(cache_dir), "--task", "toy_depth")
    assert _key(cache_dir, SEG) in out and _key(cache_dir, PIX) not in out and "1 entries" in out
    rc, out, _ = _run(capsys, "ls", "--cache-dir", str(cache_dir), "--backbone", "pixels,nothing")
    assert _key(cache_dir, PIX) in out and _key(cache_dir, SEG) not in out


def test_ls_shows_partial_filling_and_old_entries(cache_dir, capsys, monkeypatch):
    cache = FeatureCache(cache_dir)
    partial = cache.entry({**PIX, "resolution": [56, 56]})
    partial.prepare(6, shard_size=3)
    partial.write_shard(partial.shards()[0], next(produce(0, 3)))
    busy = cache.entry({**PIX, "resolution": [28, 28]})
    busy.prepare(6, shard_size=3)
    held = claims.acquire(busy.path, "shard_00001", "abcdef", claims.ClaimPolicy())
    old = cache_dir / ("0" * 24)
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"num_items": 2, "shard_size": 2, "fields": {"backbone": "x"}}))
    (cache_dir / "hashes.json").write_text("{}")  # the checkpoint hash memo lives here too: not an entry
    monkeypatch.setenv("TIPS_BENCH_CACHE", str(cache_dir))
    try:
        rc, out, _ = _run(capsys, "ls")
        assert rc == 0 and "partial 1/2" in out and "filling 0/2" in out and "old format" in out
        assert "6 entries" in out
        rc, out, _ = _run(capsys, "rm", busy.key, old.name, "--yes")
        assert rc == 1 and f"skipped {busy.key}" in out and "being filled by pid" in out
        assert busy.path.exists() and not old.exists()
    finally:
        held.release()
    rc, out, _ = _run(capsys, "rm", busy.key[:6], "--yes")
    assert rc == 0 and not busy.path.exists()


def test_rm_asks_unless_yes_and_removes_only_matches(cache_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    rc, out, err = _run(capsys, "rm", "--cache-dir", str(cache_dir), "--backbone", "pixels")
    assert rc == 2 and err.count("\n") == 1 and "pass --yes" in err
    assert FeatureCache(cache_dir).entry(PIX).complete()
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    rc, out, _ = _run(capsys, "rm", "--cache-dir", str(cache_dir), "--backbone", "pixels")
    assert rc == 0 and "nothing removed" in out and FeatureCache(cache_dir).entry(PIX).path.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    rc, out, _ = _run(capsys, "rm", "--cache-dir", str(cache_dir), "--backbone", "pixels")
    assert rc == 0 and "removed 1 entries" in out
    assert not FeatureCache(cache_dir).entry(PIX).path.exists() and FeatureCache(cache_dir).entry(SEG).complete()
    rc, out, _ = _run(capsys, "rm", "--cache-dir", str(cache_dir), "--task", "toy_depth", "--yes")
    assert rc == 0 and not FeatureCache(cache_dir).entry(SEG).path.exists()
    assert [p.name for p in cache_dir.iterdir()] == [_key(cache_dir, TEXT)]


def test_verify_reports_corruption_and_fix_lets_the_next_fill_rebuild(cache_dir, capsys):
    entry = FeatureCache(cache_dir).entry(SEG)
    target = entry.path / "shard_00001" / "feat.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    rc, out, _ = _run(capsys, "verify", "--cache-dir", str(cache_dir), "--no-progress")
    assert rc == 1 and f"{entry.key} shard_00001: feat.npy fails its CRC32 check" in out
    assert "1 corrupt shard(s) (run with --fix" in out and target.exists()
    rc, out, _ = _run(capsys, "verify", "--cache-dir", str(cache_dir), "--fix", "--no-progress")
    assert rc == 0 and "deleted" in out and not target.exists()
    rc, out, _ = _run(capsys, "verify", "--cache-dir", str(cache_dir), "--no-progress")
    assert rc == 0 and "no corrupt shard" in out and f"partial    {entry.key} (1/2 shards)" in out
    calls = []

    def again(lo, hi):
        calls.append(lo)
        yield from produce(lo, hi)

    assert FeatureCache(cache_dir).entry(SEG).fill(again, progress=False) == 3 and calls == [3]


def test_du_sums_per_backbone(cache_dir, capsys):
    rc, out, _ = _run(capsys, "du", "--cache-dir", str(cache_dir))
    lines = out.strip().splitlines()
    assert rc == 0 and "tips_s14+random (2 entries)" in out and "pixels (1 entries)" in out
    assert "total, 3 entries" in lines[-1] and "free on that file system" in lines[-1]


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, cache_dir, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    for argv in (["ls", "--cache-dir", str(afile)], ["verify", "--cache-dir", str(cache_dir), "ffffffff"],
                 ["rm", "--cache-dir", str(cache_dir), "--yes", "abc"]):
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and err.startswith("tips-bench: error: ") and err.count("\n") == 1, argv
        assert "Traceback" not in err
    assert len(list(cache_dir.iterdir())) == 3
    rc, out, _ = _run(capsys, "ls", "--cache-dir", str(tmp_path / "none"))
    assert rc == 0 and "does not exist yet" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "rm", "--help"])
    assert exit_info.value.code == 0 and "--yes" in capsys.readouterr().out


def test_verify_fix_leaves_a_shard_being_rebuilt_alone(cache_dir, capsys):
    entry = FeatureCache(cache_dir).entry(PIX)
    target = entry.path / "shard_00000" / "label.npy"
    target.write_bytes(target.read_bytes()[:-1])
    held = claims.acquire(entry.path, "shard_00000", "0badc0de", claims.ClaimPolicy())
    try:
        rc, out, _ = _run(capsys, "verify", entry.key[:8], "--cache-dir", str(cache_dir), "--fix", "--no-progress")
    finally:
        held.release()
    assert "label.npy has" in out and "being rebuilt by pid" in out and "left alone" in out and target.exists()


def test_end_to_end_run_then_inspect_verify_and_remove(tmp_path, capsys):
    cache_dir, results = tmp_path / "cache", tmp_path / "runs.jsonl"
    run = ["run", "--backbone", "pixels", "--task", "toy_knn", "--limit", "6", "--cache-dir", str(cache_dir),
           "--results", str(results), "--no-progress", "--format", "csv"]
    assert main(run) == 0
    capsys.readouterr()
    rc, out, _ = _run(capsys, "ls", "--cache-dir", str(cache_dir))
    assert rc == 0 and out.count("complete") == 2 and "synthetic-objects/train" in out and "2 entries" in out
    rc, out, _ = _run(capsys, "verify", "--cache-dir", str(cache_dir), "--no-progress")
    assert rc == 0 and "verified 2 entries" in out and "no corrupt shard" in out
    victim = next(cache_dir.glob("*/shard_00000/global_mean.npy"))
    victim.write_bytes(victim.read_bytes()[:-4] + b"\0\0\0\1")
    rc, out, _ = _run(capsys, "verify", "--cache-dir", str(cache_dir), "--no-progress", "--fix")
    assert rc == 0 and "1 corrupt shard(s) (deleted" in out and not victim.exists()
    assert main(run) == 0 and victim.exists()  # the next run rebuilt the deleted shard
    capsys.readouterr()
    rc, out, _ = _run(capsys, "rm", "--cache-dir", str(cache_dir), "--backbone", "pixels", "--yes")
    assert rc == 0 and "removed 2 entries" in out and not list(cache_dir.iterdir())
