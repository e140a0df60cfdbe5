"""The TIPS / TIPSv2 paper tasks (tasks/*.yaml) end to end on tiny official-format fixtures.

Every real dataset is written by its fixture writer (tips_bench/fixtures) and every paper task runs through the
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

from tips_bench.cli import main
from tips_bench.results import ResultsStore
from tips_bench.tasks.base import get_task_definition

REPO = Path(__file__).resolve().parents[1]

TINY_TIPS = """\
name: tiny_tips
family: tips
version: 1
description: test-only TIPS-architecture model (width 32, 2 blocks); random weights only (+random)
paper: '-'
architecture: {embed_dim: 32, depth: 2, num_heads: 1, ffn: mlp, text_num_heads: 1, read_from_checkpoint: true}
native_resolution: 56
patch_size: 14
normalization: {mean: [0.0, 0.0, 0.0], std: [1.0, 1.0, 1.0]}
pos_embed_interpolation: bilinear_antialias
prefix_tokens:
- {name: cls1, description: first CLS token}
- {name: cls2, description: second CLS token}
default_global: cls1
capabilities: [image_global, dense, text]
dense_layers: [0, 1]
checkpoint:
  files: {vision: tiny_tips_vision.npz, text: tiny_tips_text.npz, tokenizer: tiny_tips.model}
  urls: {vision: '', text: '', tokenizer: ''}
"""

PIXELS, TEXT = "pixels", "tiny_tips+random"
SMALL = {"resolution": 56, "probe.epochs": 1}
DPT = {"head.hidden": 16}  # the probe3d DPT is 512 wide; 16 keeps the CPU test fast

# task -> (fixture root, backbone, extra overrides, metrics expected with --limit 2 (None = all of the task's))
CASES: dict[str, tuple[str, str, dict, set[str] | None]] = {
    "voc_seg": ("voc", PIXELS, {}, None),
    "ade20k_seg": ("ade20k", PIXELS, {}, None),
    "nyu_depth": ("nyu_depth", PIXELS, {}, None),
    "nyu_normals": ("nyu_normals", PIXELS, DPT, None),
    "navi_depth": ("navi", PIXELS, DPT, None),
    "navi_normals": ("navi", PIXELS, DPT, None),
    "uned_retrieval": ("uned", PIXELS, {}, {"R@1", "R@1_pooled", "R@1_cars"}),  # the first 2 queries are cars
    "imagenet_knn": ("imagenet", PIXELS, {}, None),
    "imagenet_linear": ("imagenet", PIXELS, {}, None),
    "imagenet_zeroshot": ("imagenet", TEXT, {"templates": "simple"}, None),  # 1 prompt per class, not CLIP's 80
    "coco_retrieval": ("coco", TEXT, {}, None),
    "flickr_retrieval": ("flickr", TEXT, {}, None),
    "docci_retrieval": ("docci", TEXT, {}, None),
    "ade150_zeroseg": ("ade20k", TEXT, {"templates": "simple"}, None),  # 150 classes x 9 TCL prompts is slow on CPU
    "pc59_zeroseg": ("pascal_context", TEXT, {}, None),
    "pc60_zeroseg": ("pascal_context", TEXT, {}, None),
    "voc21_zeroseg": ("voc", TEXT, {}, None),
    "spair_corr": ("spair", PIXELS, {}, None),
    "navi_corr": ("navi", PIXELS, {}, None),
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A module folder holding the test-only backbone definition; $TIPS_BENCH_PATH points at it meanwhile."""
    base = tmp_path_factory.mktemp("paper_tasks")
    (base / "defs" / "backbones").mkdir(parents=True)
    (base / "defs" / "backbones" / "tiny_tips.yaml").write_text(TINY_TIPS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIPS_BENCH_PATH", str(base / "defs"))
        mp.setenv("TIPS_BENCH_CACHE", str(base / "cache"))
        mp.setenv("TIPS_BENCH_RESULTS", str(base / "default_runs.jsonl"))
        yield base


@pytest.fixture(scope="module")
def roots(work) -> dict[str, Path]:
    """Every dataset the paper tasks read, written once in its official layout."""
    from tips_bench.fixtures.ade20k import write_ade20k
    from tips_bench.fixtures.captions import write_coco_karpathy, write_docci, write_flickr30k_karpathy
    from tips_bench.fixtures.imagenet import write_imagenet
    from tips_bench.fixtures.navi import write_navi
    from tips_bench.fixtures.nyu import write_nyu_depth, write_nyu_normals
    from tips_bench.fixtures.pascal_context import write_pascal_context
    from tips_bench.fixtures.spair import write_spair
    from tips_bench.fixtures.uned import write_uned
    from tips_bench.fixtures.voc import write_voc

    d = work / "data"
    return {
        "voc": write_voc(d / "voc"),  # with the SBD "aug" labels: voc_seg trains on trainaug
        "ade20k": write_ade20k(d / "ade20k"),
        "pascal_context": write_pascal_context(d / "pascal_context"),
        "nyu_depth": write_nyu_depth(d / "nyu_depth", layout="bts"),  # nyu_depth pins the BTS layout
        "nyu_normals": write_nyu_normals(d / "nyu_normals"),
        "navi": write_navi(d / "navi"),
        "spair": write_spair(d / "spair"),
        "imagenet": write_imagenet(d / "imagenet"),
        "uned": write_uned(d / "uned"),
        "coco": write_coco_karpathy(d / "coco"),
        "flickr": write_flickr30k_karpathy(d / "flickr"),
        "docci": write_docci(d / "docci"),
    }


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
    overrides = {**SMALL, **extra}
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
        assert row.protocol["overrides"] == overrides
        assert row.protocol["resolution_used"] == [56, 56]
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
        assert d.version >= 1 and d.references and d.raw.get("notes"), task
        assert d.headline in d.metrics, task
        assert "resolution" in d.protocol, task
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
    code = _run(work, TEXT, task, missing, SMALL, work / "missing.jsonl")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tips-bench: error: ") and "\n" not in err and "Traceback" not in err
    assert str(missing) in err


@pytest.mark.parametrize("task", list(CASES))
def test_empty_dataset_root_exits_2_naming_what_is_missing(task, work, capsys):
    empty = work / "empty_root"
    empty.mkdir(exist_ok=True)
    code = _run(work, TEXT, task, empty, SMALL, work / "empty.jsonl")
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
    assert _run(work, PIXELS, "uned_retrieval", roots["uned"], SMALL, results, limit=None) == 0
    metrics = {r.metric: r.value for r in ResultsStore(results).rows()}
    assert set(metrics) == set(get_task_definition("uned_retrieval").metrics)
    domains = [m for m in metrics if m.startswith("R@1_") and m != "R@1_pooled"]
    assert metrics["R@1"] == pytest.approx(np.mean([metrics[m] for m in domains]))
