"""mode: faithful end to end: augmented views cached once (or the backbone in the loop), recorded in every row."""

from __future__ import annotations

from tips_bench.cache import FeatureCache
from tips_bench.results import ResultsStore
from tips_bench.runner import Runner, RunOptions

SMALL = {"resolution": 56, "faithful.epochs": 2, "faithful.views": 2}


def _runner(tmp_path) -> Runner:
    return Runner(store=ResultsStore(tmp_path / "runs.jsonl"), cache=FeatureCache(tmp_path / "cache"))


def test_faithful_views_are_extracted_once_and_shared_by_every_probe_seed(tmp_path):
    runner = _runner(tmp_path)
    opts = RunOptions(limit=6, progress=False, overrides={**SMALL, "mode": "faithful"})
    rows = runner.run("pixels", "toy_seg", opts)
    # 6 train + 6 eval images for the cached entries, then 2 augmented views of each of the 6 training images
    assert runner.last_forward_items == 6 + 6 + 12
    row = rows[0]
    assert row.protocol["mode"] == "faithful" and row.protocol["faithful"]["views"] == 2
    assert row.protocol["faithful"]["augment"]["rescale"] == [0.5, 2.0]
    second = runner.run("pixels", "toy_seg", RunOptions(**{**opts.__dict__, "seed": 1}))
    assert runner.last_forward_items == 0  # another probe seed reuses the views
    assert {r.metric for r in second} == {r.metric for r in rows}


def test_backbone_in_the_loop_draws_fresh_views_every_pass(tmp_path):
    runner = _runner(tmp_path)
    overrides = {**SMALL, "faithful.views": 0, "mode": "faithful"}
    rows = runner.run("pixels", "toy_depth", RunOptions(limit=4, progress=False, overrides=overrides))
    # cached entries (4 + 4) plus 2 passes x 4 training images through the backbone inside the probe loop
    assert runner.last_forward_items == 4 + 4 + 8
    assert rows[0].protocol["faithful"]["views"] == 0 and all(r.value == r.value for r in rows)


def test_cli_mode_flag_is_recorded_and_reported_with_the_mode(tmp_path, capsys):
    from tips_bench.cli import main

    common = ["run", "--backbone", "pixels", "--task", "toy_seg", "--limit", "4", "--no-progress", "--format", "csv",
              "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r.jsonl"), "--set", "resolution=56",
              "--set", "faithful.epochs=1", "--set", "faithful.views=1", "--set", "probe.epochs=1"]
    assert main(common) == 0
    assert main([*common, "--mode", "faithful"]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path / "r.jsonl"), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "toy_seg (cached)" in out and "toy_seg (faithful)" in out  # never averaged together, mode always shown
