"""The oracle self-test through the real pipeline: every task reaches the optimum its ground truth allows.

The ``oracle`` backbone encodes the ground truth of each view it encodes, so a task's headline on it has a known
optimum (see tips_bench/selftest.py for how each is obtained). These tests run ``tips-bench selftest`` on the
built-in toy suite and on every paper task's official-format fixture; a frame, cache, probe, merge or metric bug
makes a task fall short. The CLIP-shaped ``tiny_clip`` (projection width 24 != patch width 32) runs every task
once, which is how a width mismatch between global and patch tokens is caught.
"""

from __future__ import annotations

import math
import re

import pytest
from paper_fixtures import CASES, smoke

from tips_bench.cli import main
from tips_bench.results import ResultsStore
from tips_bench.suite import suite_tasks
from tips_bench.tasks.base import get_task_definition

#: Probes trained on a couple of fixture images need more steps than their protocols take on full datasets.
CONVERGE = {"probe.epochs": 100, "probe.lr": 0.01, "head.hidden": 16}
#: Per-task settings of the fixture runs (the frame, merge and metric under test stay the task's): VOC's two
#: training crops need a longer schedule; nyu_depth's BatchNorm-free DINOv2 head does not converge on two frames
#: (a BatchNorm head does); the two GeoNet fixture frames are too few for a 4-level DPT to generalise to the test
#: frame (navi_* keeps its DPT).
FIXTURE = {"voc_seg": {"probe.epochs": 300, "probe.lr": 0.05}, "nyu_depth": {"head.batchnorm": True},
           "nyu_normals": {"head.kind": "linear", "head.use_cls": False}}


def _selftest(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["selftest", "--no-progress", *argv])
    out = capsys.readouterr().out
    return code, out


def _parse(out: str) -> dict[str, tuple[float, float]]:
    """task -> (oracle score, optimum) from the printed table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0] and cells[2] != "oracle":
            rows[cells[0]] = (float(cells[2]), float(cells[3]))
    return rows


def test_toy_suite_reaches_every_optimum(tmp_path, capsys):
    code, out = _selftest(["--limit", "24", "--set", "probe.epochs=40", "--set", "resolution=112", "--cache-dir",
                           str(tmp_path)], capsys)
    tasks = suite_tasks("toy")
    assert code == 0, out
    assert f"{len(tasks)} passed, 0 failed" in out
    scores = _parse(out)
    assert set(scores) == set(tasks)
    for task in ("toy_knn", "toy_zeroshot", "toy_linear", "toy_retrieval"):
        assert scores[task][0] == pytest.approx(100.0), task  # nothing approximate: exactly the optimum
    assert scores["toy_seg"][1] > 70  # the patch-level optimum itself is high on the synthetic world (78 at 112 px)


@pytest.mark.parametrize("task", list(CASES))
def test_paper_task_reaches_its_optimum_on_the_fixture(task, work, roots, capsys):
    root_key = CASES[task][0]
    d = get_task_definition(task)
    overrides = {**smoke(task), **{k: v for k, v in CONVERGE.items() if k.split(".")[0] in d.protocol}}
    if d.type == "correspondence":  # keypoints closer than a patch blur: keep the task's own resolution
        overrides.pop("resolution", None)
    elif d.type in ("depth", "normals") and d.spec.head.kind == "dpt":  # DPT at 512 px is slow: a 56 px square
        overrides |= {"frame.resize": "square", "resolution": 56}
    elif d.type in ("depth", "normals") and d.spec.frame.resize == "none":  # 480x640 x 100 epochs is slow
        overrides |= {"frame.resize": "keep_aspect", "frame.short_side": 112}  # still scored at the GT's size
    overrides |= FIXTURE.get(task, {})
    argv = ["--task", task, "--root", str(roots[root_key]), "--cache-dir", str(work / "selftest_cache")]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    code, out = _selftest(argv, capsys)
    assert code == 0, out
    assert "1 passed, 0 failed" in out


def test_selftest_fails_loudly_when_a_task_falls_short(tmp_path, capsys):
    """A probe that cannot learn (one step at a tiny learning rate) must fail the self-test with exit 1."""
    code, out = _selftest(["--task", "toy_seg", "--limit", "8", "--set", "probe.epochs=1", "--set", "probe.lr=1e-7",
                           "--cache-dir", str(tmp_path)], capsys)
    assert code == 1
    assert "FAIL" in out and "0 passed, 1 failed" in out


def test_every_task_runs_with_a_clip_shaped_backbone(work, roots, tmp_path, capsys):
    """tiny_clip+random: projected global width 24, patch width 32, text tower; every toy and paper task."""
    results = tmp_path / "clip.jsonl"
    toy = suite_tasks("toy") + suite_tasks("toy-extended")
    for task in dict.fromkeys(toy):
        extra = {"head.hidden": 8} if "dpt" in task else {}
        argv = ["run", "--backbone", "tiny_clip+random", "--task", task, "--limit", "6", "--no-progress",
                "--no-paper", "--format", "csv", "--results", str(results), "--cache-dir", str(tmp_path / "c"),
                "--set", "resolution=56", *(a for k, v in extra.items() for a in ("--set", f"{k}={v}"))]
        if "probe" in get_task_definition(task).protocol:
            argv += ["--set", "probe.epochs=1"]
        assert main(argv) == 0, (task, capsys.readouterr().err)
    for task, (root_key, _, extra, _) in CASES.items():
        overrides = {**smoke(task), **extra}
        argv = ["run", "--backbone", "tiny_clip+random", "--task", task, "--root", str(roots[root_key]), "--limit",
                "2", "--no-progress", "--no-paper", "--format", "csv", "--results", str(results), "--cache-dir",
                str(tmp_path / "c")]
        for key, value in overrides.items():
            argv += ["--set", f"{key}={value}"]
        assert main(argv) == 0, (task, capsys.readouterr().err)
    rows = ResultsStore(results).rows()
    assert {r.task for r in rows} == set(toy) | set(CASES)
    assert all(math.isfinite(r.value) for r in rows if not re.match(r"R@1_", r.metric))


def test_selftest_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["selftest", "--help"])
    assert "oracle" in capsys.readouterr().out
