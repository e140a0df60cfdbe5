"""The TIPS / TIPSv2 paper tasks (tasks/*.yaml) end to end on tiny official-format fixtures.

Every real dataset is written by its fixture writer (tests/fixture_writers) and every paper task runs through the
CLI with ``--limit 2``, a 56 px input and one probe epoch. Image-only tasks use the ``pixels`` baseline; tasks that
need a text tower use ``tiny_tips``, a test-only random TIPS-architecture model (width 32, 2 blocks, random
12-layer text tower) registered through ``$TIPS_BENCH_PATH`` for this module only.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from paper_fixtures import CASES, PIXELS, REPO, TEXT, smoke

from tips_bench.cli import main
from tips_bench.results import ResultsStore
from tips_bench.tasks.base import get_task_definition


def _run(work: Path, backbone: str, task: str, root: Path, overrides: dict, results: Path,
         limit: int | None = 2) -> int:
    argv = ["run", "--backbone", backbone, "--task", task, "--root", str(root), "--no-progress", "--no-paper",
            "--format", "csv", "--cache-dir", str(work / "cache"), "--results", str(results)]
    if limit:
        argv += ["--limit", str(limit)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    return main(argv)


@pytest.mark.parametrize("task", list(CASES))
def test_paper_task_runs_end_to_end_on_its_fixture(task, work, roots, capsys):
    root_key, backbone, extra, expected = CASES[task]
    overrides = {**smoke(task), **extra}
    results = work / f"{task}.jsonl"
    assert _run(work, backbone, task, roots[root_key], overrides, results) == 0, capsys.readouterr().err
    rows = ResultsStore(results).rows()
    definition = get_task_definition(task)
    assert {r.metric for r in rows} == (expected if expected is not None else set(definition.metrics))
    for row in rows:
        assert row.task == task and row.task_version == definition.version and row.dataset == definition.dataset
        assert math.isfinite(row.value), (row.metric, row.value)
        assert row.higher_is_better == definition.higher_is_better[row.metric]
        assert row.limit == 2 and row.num_samples <= 2
        smoke_extra = {"max_templates": 1} if "max_templates" in definition.protocol else {}
        assert row.protocol["overrides"] == {**smoke_extra, **overrides}  # --limit keeps one template per class
        frame = row.protocol["frame_resolved"]
        if frame["resize"] == "square":
            assert row.protocol["resolution_used"] == [56, 56]
        elif frame["resize"] in ("keep_aspect", "center_crop"):
            assert frame["short_side"] == 56
        assert row.protocol["task_version"] == definition.version
        if "probe" in definition.protocol:
            assert row.protocol["probe"]["epochs"] == 1
        for key, value in extra.items():  # dotted overrides land in the recorded protocol
            node = row.protocol
            for part in key.split("."):
                node = node[part]
            assert node == value


def test_every_paper_reference_row_names_a_task_and_metric_we_define():
    with open(REPO / "results" / "paper_reference.csv", newline="") as f:
        pairs = {(r["task"], r["metric"]) for r in csv.DictReader(f)}
    for task, metric in sorted(pairs):
        definition = get_task_definition(task)
        assert metric in definition.metrics, (task, metric)
        assert definition.higher_is_better[metric] == (metric not in {"rmse"}), (task, metric)
    paper_tasks = {t for t, _ in pairs}
    assert paper_tasks | {"spair_corr", "navi_corr"} == set(CASES)


def test_paper_task_files_record_their_protocol():
    for task in CASES:
        d = get_task_definition(task)
        assert d.version >= 1 and d.references and d.notes, task
        assert d.headline in d.metrics, task
        assert "frame" in d.raw["protocol"], task  # every paper task declares its evaluation frame
        if d.type not in ("correspondence", "segmentation", "zeroshot_segmentation"):
            assert "global" in d.protocol, task  # null = the backbone's default token (TIPS: cls1)


def test_validate_and_tasks_list_the_paper_tasks(work, capsys):
    assert main(["validate"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in CASES:
        assert task in out


@pytest.mark.parametrize("task", ["voc_seg", "nyu_depth", "uned_retrieval", "coco_retrieval", "spair_corr"])
def test_missing_dataset_root_exits_2_with_one_line_naming_the_path(task, work, capsys):
    missing = work / "no_such_folder"
    code = _run(work, TEXT, task, missing, smoke(task), work / "missing.jsonl")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tips-bench: error: ") and "\n" not in err and "Traceback" not in err
    assert str(missing) in err


@pytest.mark.parametrize("task", list(CASES))
def test_empty_dataset_root_exits_2_naming_what_is_missing(task, work, capsys):
    empty = work / "empty_root"
    empty.mkdir(exist_ok=True)
    code = _run(work, TEXT, task, empty, smoke(task), work / "empty.jsonl")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tips-bench: error: ") and "\n" not in err and str(empty) in err


# ---------------------------------------------------------------------------- UnED scoring (knn_retrieval)


def _uned_reference(query, index, retrieval) -> dict[str, float]:
    """Brute force with the dataset's own bookkeeping: UnedRetrieval.self_index and .relevant(q)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    x = index / np.linalg.norm(index, axis=1, keepdims=True)
    hits: dict[str, list[bool]] = {}
    for k in range(len(q)):
        sims = x @ q[k]
        if retrieval.self_index[k] >= 0:
            sims[retrieval.self_index[k]] = -np.inf
        domain = retrieval.domains[retrieval.query.domain_ids[k]]
        hits.setdefault(domain, []).append(bool(retrieval.relevant(k)[int(np.argmax(sims))]))
    out = {f"R@1_{d}": 100.0 * float(np.mean(h)) for d, h in hits.items()}
    out["R@1"] = float(np.mean(list(out.values())))
    out["R@1_pooled"] = 100.0 * float(np.mean([v for h in hits.values() for v in h]))
    return out


def test_uned_recall_drops_self_matches_uses_label_sets_and_averages_domains(roots):
    from tips_bench.data.uned import UnedRetrieval
    from tips_bench.tasks.classification import _uned_recall_at_1

    r = UnedRetrieval(roots["uned"])
    rng = np.random.default_rng(0)
    index = rng.normal(size=(len(r.index), 8)).astype(np.float32)
    query = rng.normal(size=(len(r.query), 8)).astype(np.float32)
    own = r.self_index >= 0
    query[own] = index[r.self_index[own]] + 1e-3  # each self-indexed query is nearest to itself
    q_gld, (i_gld, _) = r.query.slices["gldv2"][0], r.index.slices["gldv2"]
    assert r.query.label_sets[q_gld] == (1, 9) and r.index.label_sets[i_gld] == (9,)
    query[q_gld] = index[i_gld]  # multi-label query whose nearest neighbour carries its second class id
    got = _uned_recall_at_1(query, index, r.query, r.index)
    want = _uned_reference(query, index, r)
    assert got.keys() == want.keys() and len(got) == 8 + 2
    assert all(got[k] == pytest.approx(want[k]) for k in want)
    assert got["R@1_gldv2"] == 100.0
    assert got["R@1"] == pytest.approx(np.mean([got[f"R@1_{d}"] for d in r.domains]))


def test_uned_task_reports_every_domain_without_limit(work, roots):
    results = work / "uned_full.jsonl"
    assert _run(work, PIXELS, "uned_retrieval", roots["uned"], smoke("uned_retrieval"), results, limit=None) == 0
    metrics = {r.metric: r.value for r in ResultsStore(results).rows()}
    assert set(metrics) == set(get_task_definition("uned_retrieval").metrics)
    domains = [m for m in metrics if m.startswith("R@1_") and m != "R@1_pooled"]
    assert metrics["R@1"] == pytest.approx(np.mean([metrics[m] for m in domains]))
