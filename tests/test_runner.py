"""End to end on the synthetic world: cache reuse, provenance, reports, the regression gate."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from tips_bench.cache import FeatureCache
from tips_bench.cli import main
from tips_bench.results import ResultsStore
from tips_bench.runner import Runner, RunOptions

SMALL = {"resolution": 56, "probe.epochs": 2}


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TIPS_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TIPS_BENCH_RESULTS", str(tmp_path / "runs.jsonl"))
    return tmp_path


def _runner(tmp_path) -> Runner:
    return Runner(store=ResultsStore(tmp_path / "runs.jsonl"), cache=FeatureCache(tmp_path / "cache"))


def test_second_run_reads_the_cache_and_never_runs_the_backbone(env, monkeypatch):
    runner = _runner(env)
    opts = RunOptions(limit=12, progress=False, overrides=SMALL)
    first = runner.run("pixels", "toy_seg", opts)
    assert runner.last_forward_items == 24  # 12 train + 12 eval images went through the backbone

    import tips_bench.runner as runner_module

    def forbidden(*args, **kwargs):
        raise AssertionError("the backbone was loaded although every cache entry exists")

    monkeypatch.setattr(runner_module, "load_backbone", forbidden)
    second = runner.run("pixels", "toy_seg", opts)
    assert runner.last_forward_items == 0
    assert {r.metric: r.value for r in first} == {r.metric: r.value for r in second}


def test_rows_carry_protocol_and_provenance(env):
    small = {"resolution": 56}  # toy_knn has no probe: --set probe.* would be refused
    rows = _runner(env).run("pixels", "toy_knn", RunOptions(limit=16, progress=False, overrides=small, seed=3))
    row = next(r for r in rows if r.metric == "top1")
    assert row.task_version == 1 and row.seed == 3 and row.limit == 16
    assert row.protocol["resolution_used"] == [56, 56] and row.protocol["overrides"] == small
    assert row.protocol["global_token"] == "mean" and row.protocol["ks"] == [10, 20, 100, 200]
    assert row.code_version.startswith("0.1.0") and "torch" in row.packages and row.device
    assert row.config_hash and row.wall_time_s > 0 and row.images_per_s > 0 and row.peak_memory_mb > 0
    stored = ResultsStore(env / "runs.jsonl").rows()
    assert [r.metric for r in stored] == [r.metric for r in rows]


def test_random_init_text_tasks_run_and_image_only_backbone_is_refused(env, capsys):
    code = main(["run", "--backbone", "pixels", "--task", "toy_zeroshot", "--limit", "8", "--set", "resolution=56",
                 "--no-progress"])
    assert code == 2
    assert "needs a text tower, which pixels does not have" in capsys.readouterr().err
    rows = _runner(env).run("tips_s14", "toy_retrieval",
                            RunOptions(random_init=True, limit=6, progress=False, overrides={"resolution": 28}))
    metrics = {r.metric: r.value for r in rows}
    assert set(metrics) == {"i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5"}
    assert all(0 <= v <= 100 for v in metrics.values())
    assert rows[0].backbone == "tips_s14+random" and rows[0].checkpoint_hash == ""


def test_cli_run_report_export(env, capsys):
    args = ["run", "--backbone", "pixels", "--task", "toy_knn,toy_corr", "--limit", "8", "--set", "resolution=56",
            "--no-progress", "--seeds", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # --limit / --set runs are smoke runs: shown apart, never compared with the paper or full runs
    assert "toy_knn (smoke)/top1" in out and "toy_corr (smoke)/recall@10px" in out
    assert main(["report", "--format", "markdown", "--plot", str(env / "plots")]) == 0
    md = capsys.readouterr().out
    assert "| pixels |" in md and "±" in md  # two seeds give a spread
    assert list((env / "plots").glob("*.png"))
    assert main(["export", "--csv", str(env / "board.csv")]) == 0
    with open(env / "board.csv") as fh:
        board = list(csv.DictReader(fh))
    knn = next(r for r in board if r["task"] == "toy_knn (smoke)" and r["metric"] == "top1")
    assert int(knn["n_seeds"]) == 2 and json.loads(knn["protocol"])["overrides"] == {"resolution": 56}


def test_regress_passes_within_bands_and_fails_outside(env, capsys):
    baseline = env / "baseline.csv"
    common = ["--backbone", "pixels", "--task", "toy_knn", "--limit", "16", "--set", "resolution=56", "--no-progress"]
    assert main(["regress", "--update", str(baseline), "--seeds", "2", *common]) == 0
    assert main(["regress", "--baseline", str(baseline), *common]) == 0
    assert "failed" in capsys.readouterr().out
    with open(baseline) as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # move every band away from the observed value
        row["low"], row["high"] = str(float(row["mean"]) + 50), str(float(row["mean"]) + 60)
    with open(baseline, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["regress", "--baseline", str(baseline), *common]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_regress_update_includes_bands_of_another_file_without_running_them(env, capsys):
    """--include (the mini study's pretraining-seed bands): copied for the suite's tasks, those cells not run."""
    from tips_bench.suite import Band, read_baseline, write_baseline

    other = env / "mini_bands.csv"
    write_baseline([Band("pixels", False, "toy_knn", 2, "top1", True, 50.0, 2.0, 3, 4.0, 1.0, 42.0, 58.0),
                    Band("pixels", False, "toy_depth_dpt", 2, "rmse", False, 1.0, 0.1, 3, 4.0, 0.02, 0.6, 1.4)], other)
    baseline = env / "with_included.csv"
    common = ["--task", "toy_knn", "--limit", "16", "--set", "resolution=56", "--no-progress"]
    assert main(["regress", "--update", str(baseline), "--seeds", "2", "--backbone", "pixels,tips_s14+random",
                 "--include", str(other), *common]) == 0
    assert "and 1 bands of" in capsys.readouterr().out
    bands = {(b.backbone, b.random_init, b.task): b for b in read_baseline(baseline)}
    assert bands[("pixels", False, "toy_knn")].mean == 50.0  # copied, not measured
    assert ("pixels", False, "toy_depth_dpt") not in bands  # not a task of this update
    assert bands[("tips_s14", True, "toy_knn")].n_seeds == 2  # measured
    assert main(["regress", "--update", str(baseline), "--backbone", "pixels", "--include", str(other),
                 "--task", "toy_seg", "--limit", "16", "--no-progress"]) == 2  # no band of toy_seg in the file
    assert "has no band" in capsys.readouterr().err


def test_bad_override_and_unknown_task(env, capsys):
    assert main(["run", "--backbone", "pixels", "--task", "toy_sge", "--no-progress"]) == 2
    assert "did you mean toy_seg" in capsys.readouterr().err
    assert main(["run", "--backbone", "pixels", "--task", "toy_seg", "--set", "epochs"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_zero_shot_with_text_equal_to_images_is_perfect():
    """Identical image and class-text embeddings must classify every image correctly."""
    from tips_bench.tasks.base import EvalContext, get_task_definition, make_task

    task = make_task(get_task_definition("toy_zeroshot"))
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(4, 16)).astype(np.float32)
    labels = np.arange(40) % 4

    class Entry:
        def read(self, name, dtype=None):
            return prototypes[labels] if name.startswith("global") else labels

    class Info:
        class_names = ("sphere", "cube", "cylinder", "cone")
        extra: dict = {}
        num_classes = 4

    class Data:
        info = Info()

    def encode(texts):
        return np.stack([prototypes[Info.class_names.index(t.split()[-1].rstrip("s."))] for t in texts])

    task.d.protocol["templates"] = "simple"
    ctx = EvalContext(entries={"eval": Entry()}, datasets={"eval": Data()}, backbone=None, global_name="cls1",
                      layer_names=[], encode_texts=encode, seed=0, device="cpu", batch_size=8, progress=False)
    assert task.evaluate(ctx)["top1"] == 100.0


def test_correspondence_matching_recovers_known_shift():
    """Unique features per patch, b = a shifted by one patch: matches land exactly one patch away."""
    from tips_bench.tasks.correspondence import match_points

    torch.manual_seed(0)
    fa = torch.randn(1, 32, 6, 6)
    fb = torch.roll(fa, shifts=1, dims=3)  # content moves one patch to the right
    centres = torch.tensor([[[(j + 0.5) * 14 - 0.5, (i + 0.5) * 14 - 0.5] for i in range(6) for j in range(5)]])
    pred = match_points(fa, fb, centres, (84, 84), upsample=1)
    expected = centres.clone()
    expected[..., 0] += 14
    assert torch.allclose(pred, expected, atol=1e-4)
    assert not math.isnan(float(pred.sum()))
