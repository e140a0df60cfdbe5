"""The streamed DINOv2-style linear probe: parallel lr heads, held-out selection, bounded-memory shuffling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tips_bench.cache import CacheEntry
from tips_bench.errors import TipsBenchError
from tips_bench.probes.linear import (
    LinearProbeConfig,
    _feature_stats,
    _shuffled_batches,
    holdout_mask,
    train_linear_grid,
)
from tips_bench.tasks.classification import linear_config

KEY = "global_cls"


def _entry(tmp_path, feats: np.ndarray, labels: np.ndarray, shard_size: int = 37) -> CacheEntry:
    """A real cache entry (fp16 features, uneven shards), written through the CacheEntry API."""
    entry = CacheEntry(tmp_path / "cache", {"test": tmp_path.name, "n": len(feats)})
    entry.prepare(len(feats), shard_size)
    for shard in entry.shards():
        entry.write_shard(shard, {KEY: feats[shard.start : shard.stop].astype(np.float16),
                                  "label": labels[shard.start : shard.stop].astype(np.int64)})
    return entry


def _clusters(n: int, seed: int = 0, classes: int = 4, dim: int = 8, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 2
    y = rng.integers(0, classes, size=n)
    return (centers[y] + noise * rng.normal(size=(n, dim))).astype(np.float32), y


def test_holdout_mask_is_a_fixed_seeded_fraction() -> None:
    a = holdout_mask(1000, 0.02, seed=0)
    assert a.sum() == 20 and a.dtype == bool
    np.testing.assert_array_equal(a, holdout_mask(1000, 0.02, seed=0))
    assert not np.array_equal(a, holdout_mask(1000, 0.02, seed=1))
    assert holdout_mask(10, 0.01, seed=0).sum() == 1  # at least one row when the fraction is > 0
    assert not holdout_mask(10, 0.0, seed=0).any()
    with pytest.raises(ValueError, match="leaves none to train on"):
        holdout_mask(1, 0.5, seed=0)


def test_shuffled_epoch_visits_every_kept_row_once_in_bounded_windows(tmp_path, monkeypatch) -> None:
    n = 203
    ids = np.arange(n, dtype=np.float32)[:, None]  # feature = row index (exact in fp16 below 2048)
    entry = _entry(tmp_path, ids, np.arange(n) % 3)
    keep = ~holdout_mask(n, 0.1, seed=0)
    cfg = LinearProbeConfig(lrs=(0.1,), batch_size=16, shuffle_block=8, shuffle_window=40)
    requested: list[int] = []
    read_rows = entry.read_rows

    def spy(name, rows, dtype=np.float32):
        requested.append(len(rows))
        return read_rows(name, rows, dtype)

    monkeypatch.setattr(entry, "read_rows", spy)
    monkeypatch.setattr(entry, "read", lambda *a, **k: pytest.fail("the linear probe must not read a whole array"))
    epochs = []
    for epoch in range(2):
        batches = list(_shuffled_batches(entry, KEY, keep, cfg, seed=3, epoch=epoch))
        assert [len(y) for _, y in batches[:-1]] == [16] * (len(batches) - 1) and 0 < len(batches[-1][1]) <= 16
        rows = np.concatenate([x[:, 0] for x, _ in batches]).astype(int)
        assert sorted(rows.tolist()) == np.flatnonzero(keep).tolist()  # each kept row once, held-out rows never
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), rows % 3)  # labels stay with rows
        epochs.append(rows)
    assert max(requested) <= 40  # never more than one window of rows in memory
    assert not np.array_equal(epochs[0], epochs[1])  # a new order every epoch ...
    again = np.concatenate([x[:, 0] for x, _ in _shuffled_batches(entry, KEY, keep, cfg, seed=3, epoch=1)])
    np.testing.assert_array_equal(again.astype(int), epochs[1])  # ... that is a function of (seed, epoch)


def test_streamed_standardisation_matches_numpy(tmp_path) -> None:
    x, y = _clusters(300, dim=6)
    entry = _entry(tmp_path, x, y)
    keep = ~holdout_mask(300, 0.2, seed=0)
    mean, std = _feature_stats(entry, KEY, keep)
    x16 = x.astype(np.float16).astype(np.float64)[keep]
    np.testing.assert_allclose(mean, x16.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, x16.std(0) + 1e-6, rtol=1e-5)


def test_parallel_heads_train_exactly_as_separate_runs(tmp_path) -> None:
    x, y = _clusters(160)
    entry = _entry(tmp_path, x, y)
    common = dict(epochs=3, batch_size=32, optimizer="sgd", init="normal", val_fraction=0.1, shuffle_window=64)
    grid = train_linear_grid(entry, KEY, 4, LinearProbeConfig(lrs=(0.05, 0.5, 5e-5), **common), seed=1)
    alone = train_linear_grid(entry, KEY, 4, LinearProbeConfig(lrs=(0.05,), **common), seed=1)
    # head 0 starts from the same weights and sees the same batches: the other heads do not change its training
    torch.testing.assert_close(grid.heads[0].weight, alone.heads[0].weight, rtol=0, atol=0)
    assert not torch.equal(grid.heads[0].weight, grid.heads[1].weight)
    assert grid.steps == 3 * 5 and grid.n_heldout == 16 and grid.n_fit == 144
    assert len(grid.heldout_top1) == 3 and grid.heldout_top1[2] < grid.heldout_top1[grid.chosen]
    assert grid.chosen in (0, 1) and grid.chosen_lr == (0.05, 0.5)[grid.chosen]  # lr 5e-5 barely moves
    again = train_linear_grid(entry, KEY, 4, LinearProbeConfig(lrs=(0.05, 0.5, 5e-5), **common), seed=1)
    for a, b in zip(grid.heads.parameters(), again.heads.parameters(), strict=True):
        assert torch.equal(a, b)  # deterministic for a seed
    other = train_linear_grid(entry, KEY, 4, LinearProbeConfig(lrs=(0.05, 0.5, 5e-5), **common), seed=2)
    assert not torch.equal(other.heads[0].weight, grid.heads[0].weight)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_best_head_is_picked_on_held_out_train_and_scored_on_eval(tmp_path, device) -> None:
    x, y = _clusters(400, seed=2)
    xt, yt = _clusters(100, seed=2)  # the same centres (same seed), other points
    train, test = _entry(tmp_path / "a", x, y), _entry(tmp_path / "b", xt, yt)
    cfg = LinearProbeConfig(lrs=(1e-7, 0.1), epochs=5, batch_size=64, optimizer="sgd", init="normal",
                            standardize=False, val_fraction=0.25)
    result = train_linear_grid(train, KEY, 4, cfg, seed=0, device=device)
    assert result.heads[0].weight.device.type == device
    assert result.chosen == 1 and result.heldout_top1[1] == 100.0 and result.heldout_top1[0] < 100.0
    assert result.evaluate(test, KEY, device) == {"top1": 100.0, "top5": 100.0}


def test_a_diverging_head_is_never_chosen(tmp_path) -> None:
    x, y = _clusters(128)
    entry = _entry(tmp_path, x * 1000, y)
    cfg = LinearProbeConfig(lrs=(1e-4, 1e38), epochs=2, batch_size=32, optimizer="sgd", standardize=False,
                            val_fraction=0.25)
    result = train_linear_grid(entry, KEY, 4, cfg, seed=0)
    assert np.isnan(result.heldout_top1[1]) and result.chosen == 0
    with pytest.raises(FloatingPointError, match="every head"):
        train_linear_grid(entry, KEY, 4, LinearProbeConfig(lrs=(1e38,), epochs=2, batch_size=32, optimizer="sgd",
                                                           standardize=False), seed=0)


def test_linear_config_reads_the_dinov2_grid_and_rejects_bad_values() -> None:
    probe = {"epochs": 10, "batch_size": 1024, "optimizer": "sgd", "weight_decay": 0.0, "lr_grid": [1e-5, 0.1],
             "lr_reference_batch": 256, "val_fraction": 0.02, "init": "normal"}
    cfg = linear_config("t", probe, False)
    assert cfg.lrs == pytest.approx((4e-5, 0.4)) and cfg.val_fraction == 0.02 and not cfg.standardize
    legacy = linear_config("t", {"epochs": 60, "lr": 0.01, "batch_size": 64})  # toy_linear: one AdamW head
    assert legacy.lrs == (0.01,) and legacy.optimizer == "adamw" and legacy.standardize and legacy.val_fraction == 0
    for bad in ({"lr_grid": [1e-3, 1e-2]}, {"val_fraction": 1.5}, {"init": "xavier"}, {"optimizer": "lamb"},
                {"lr_grid": [-1.0]}, {"batch_size": "big"}, {"shuffle_window": 0}):
        with pytest.raises(TipsBenchError, match="task t: bad probe settings"):
            linear_config("t", bad)
    with pytest.raises(TipsBenchError, match="standardize must be true or false"):
        linear_config("t", {}, "train statistics")


def test_linear_task_end_to_end_records_the_chosen_lr(tmp_path, capsys) -> None:
    from tips_bench.cli import main
    from tips_bench.results import ResultsStore

    common = ["--backbone", "pixels", "--task", "toy_linear", "--limit", "24", "--no-progress", "--cache-dir",
              str(tmp_path / "cache"), "--results", str(tmp_path / "runs.jsonl"), "--set", "resolution=56",
              "--set", "probe.epochs=2"]
    grid = ["--set", "probe.lr_grid=[0.0001,0.01]", "--set", "probe.val_fraction=0.25"]
    assert main(["run", *common, *grid]) == 0, capsys.readouterr().err
    row = ResultsStore(tmp_path / "runs.jsonl").rows()[-1]
    timings = row.protocol["timings"]
    assert row.metric == "top1" and 0.0 <= row.value <= 100.0
    assert timings["chosen_lr"] in (0.0001, 0.01) and timings["n_heldout"] == 6
    assert {"heldout_top1@lr0.0001", "heldout_top1@lr0.01", "heldout_top1", "probe_train_s"} <= set(timings)
    for bad, what in ((["--set", "probe.val_fraction=1.5"], "'probe.val_fraction' has value 1.5"),
                      (["--set", "probe.lr_grid=[0.001,0.01]"], "needs val_fraction > 0"),
                      (["--set", "standardize=maybe"], "'standardize' has value 'maybe'")):
        assert main(["run", *common, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert what in err and "\n" not in err and "Traceback" not in err
