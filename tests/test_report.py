"""Comparison tables, renderers, plots, the leaderboard export and the paper reference CSV."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tips_bench import report
from tips_bench.errors import TipsBenchError
from tips_bench.report import (
    comparison_table,
    export_leaderboard,
    load_paper_reference,
    plot,
    render_csv,
    render_markdown,
    render_rich,
)
from tips_bench.results import ResultRow

ALLOWED_BACKBONES = {
    "", "tips_s14", "tips_b14", "tips_l14", "tips_so400m14", "tips_g14", "tips_g14_lr", "tipsv2_b14",
    "tipsv2_l14", "tipsv2_so400m14", "tipsv2_g14", "dinov2_g14", "clip_l14", "siglip_so400m14",
}
ALLOWED_TASK_METRICS = {
    ("voc_seg", "mIoU"), ("ade20k_seg", "mIoU"), ("nyu_depth", "rmse"), ("navi_depth", "rmse"),
    ("nyu_normals", "rmse"), ("navi_normals", "rmse"), ("uned_retrieval", "R@1"), ("imagenet_knn", "top1"),
    ("imagenet_linear", "top1"), ("imagenet_zeroshot", "top1"),
    ("imagenet_knn_dinov2", "top1"), ("imagenet_linear_dinov2", "top1"), ("ade150_zeroseg", "mIoU"),
    ("pc59_zeroseg", "mIoU"), ("pc60_zeroseg", "mIoU"), ("voc21_zeroseg", "mIoU"),
} | {(f"{d}_retrieval", m) for d in ("coco", "flickr", "docci") for m in ("i2t_R@1", "t2i_R@1")}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(backbone: str, task: str, metric: str, value: float, seed: int = 0, day: int = 1, **kw) -> ResultRow:
    fields = dict(
        run_id=f"{backbone}-{task}-{seed}-{day}", timestamp=f"2025-03-{day:02d}T12:00:00+00:00",
        backbone=backbone, backbone_family=backbone.split("_")[0], task=task, task_version=1, dataset=task,
        split="val", metric=metric, value=value, higher_is_better=metric != "rmse", seed=seed,
        protocol={"resolution": 448}, config_hash=f"cfg{seed}", checkpoint_hash="ck", code_version="0.1.0",
        packages={"numpy": "2.0"}, device="cpu", wall_time_s=1.0, images_per_s=2.0, peak_memory_mb=3.0,
        num_samples=10, limit=None,
    )
    fields.update(kw)
    return ResultRow(**fields)


PAPER = [
    {"backbone": "tips_g14", "paper_model": "[rel] TIPS-g/14 HR", "task": "voc_seg", "metric": "mIoU",
     "value": 83.1, "higher_is_better": True, "source": "TIPS v1 Table 2", "note": ""},
    {"backbone": "tips_g14", "paper_model": "[rel] TIPS-g/14 HR", "task": "nyu_depth", "metric": "rmse",
     "value": 0.363, "higher_is_better": False, "source": "TIPS v1 Table 2", "note": ""},
]


@pytest.fixture
def rows() -> list[ResultRow]:
    return [
        row("tips_g14", "voc_seg", "mIoU", 83.0, seed=0),
        row("tips_g14", "voc_seg", "mIoU", 83.8, seed=1),
        # an older row for seed 1: replaced by the one above
        row("tips_g14", "voc_seg", "mIoU", 10.0, seed=1, run_id="stale", timestamp="2025-02-01T00:00Z"),
        row("tips_g14", "nyu_depth", "rmse", 0.360),
        row("clip_l14", "voc_seg", "mIoU", 74.0, seed=0, day=1),
        row("clip_l14", "voc_seg", "mIoU", 75.0, seed=0, day=2),  # newer run, same seed
    ]


# ---------------------------------------------------------------- comparison table


def test_mean_std_over_latest_seeds(rows: list[ResultRow]) -> None:
    table = comparison_table(rows)
    assert table.columns == ["nyu_depth/rmse", "voc_seg/mIoU"]
    assert table.rows == ["clip_l14", "tips_g14"]
    cell = table.cells[1][1]
    assert cell is not None and cell.n_seeds == 2
    assert cell.mean == pytest.approx(83.4)
    assert cell.std == pytest.approx(0.565685, abs=1e-5)  # sample std of 83.0 and 83.8
    assert cell.text == "83.4 ± 0.6"
    clip = table.cells[0][1]
    assert clip is not None and clip.mean == 75.0 and clip.std is None and clip.text == "75.0"
    assert table.cells[0][0] is None


def test_paper_delta_sign(rows: list[ResultRow]) -> None:
    table = comparison_table(rows, paper=PAPER)
    seg, depth = table.cells[1][1], table.cells[1][0]
    assert seg.text == "83.4 ± 0.6 (paper 83.1, Δ +0.3)"
    assert seg.better_than_paper is True
    assert depth.text == "0.360 (paper 0.363, Δ -0.003)"
    assert depth.better_than_paper is True  # lower RMSE is better
    worse = comparison_table([row("tips_g14", "voc_seg", "mIoU", 82.0)], paper=PAPER).cells[0][0]
    assert worse.text == "82.0 (paper 83.1, Δ -1.1)" and worse.better_than_paper is False


def test_paper_prefers_authors_source_over_third_party() -> None:
    paper = [
        {**PAPER[0], "value": 99.0, "source": "TIPSv2 Table 7 [third-party notes]"},
        PAPER[0],
    ]
    cell = comparison_table([row("tips_g14", "voc_seg", "mIoU", 83.1)], paper=paper).cells[0][0]
    assert cell.paper == 83.1 and cell.text == "83.1 (paper 83.1, Δ +0.0)"


def test_metrics_filter_and_newest_task_version() -> None:
    rows = [
        row("tips_g14", "voc_seg", "mIoU", 80.0, task_version=1),
        row("tips_g14", "voc_seg", "mIoU", 81.0, task_version=2),
        row("tips_g14", "nyu_depth", "rmse", 0.4),
    ]
    table = comparison_table(rows, metrics=["mIoU"])
    assert table.columns == ["voc_seg/mIoU"]
    assert table.cells[0][0].mean == 81.0
    assert comparison_table(rows, metrics=["nyu_depth/rmse", "voc_seg/mIoU"]).columns == [
        "nyu_depth/rmse", "voc_seg/mIoU",
    ]
    assert comparison_table([]).columns == [] and comparison_table([]).rows == []


# ---------------------------------------------------------------- renderers


def test_markdown_contains_cells(rows: list[ResultRow]) -> None:
    md = render_markdown(comparison_table(rows, paper=PAPER))
    lines = md.splitlines()
    assert lines[0] == "| backbone | nyu_depth/rmse | voc_seg/mIoU |"
    assert lines[1] == "| --- | --- | --- |"
    assert "| tips_g14 | 0.360 (paper 0.363, Δ -0.003) | 83.4 ± 0.6 (paper 83.1, Δ +0.3) |" in lines
    assert "| clip_l14 |  | 75.0 |" in lines


def test_csv_round_trips(rows: list[ResultRow]) -> None:
    table = comparison_table(rows, paper=PAPER)
    parsed = list(csv.reader(io.StringIO(render_csv(table))))
    assert parsed[0] == ["backbone", *table.columns]
    assert parsed[1:] == [[name, *texts] for name, texts in zip(table.rows, table.text_grid(), strict=True)]


def test_render_rich(rows: list[ResultRow]) -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_rich(comparison_table(rows, paper=PAPER)))
    out = console.file.getvalue()
    assert "83.4 ± 0.6 (paper 83.1, Δ +0.3)" in out and "tips_g14" in out


# ---------------------------------------------------------------- plots and export


def test_plot_writes_valid_pngs(rows: list[ResultRow], tmp_path: Path) -> None:
    rows = [*rows, row("tips_g14", "flickr_retrieval", "i2t_R@1", 93.0)]
    paths = plot(rows, tmp_path / "plots", paper=PAPER)
    names = sorted(p.name for p in paths)
    assert names == ["flickr_retrieval__i2t_R_1.png", "nyu_depth__rmse.png", "voc_seg__mIoU.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == names  # no temp files left


def test_export_leaderboard(rows: list[ResultRow], tmp_path: Path) -> None:
    path = export_leaderboard(rows, tmp_path / "out" / "leaderboard.csv", paper=PAPER)
    records = list(csv.DictReader(path.open(newline="")))
    assert [(r["backbone"], r["task"]) for r in records] == [
        ("clip_l14", "voc_seg"), ("tips_g14", "nyu_depth"), ("tips_g14", "voc_seg"),
    ]
    seg = records[2]
    assert float(seg["mean"]) == pytest.approx(83.4) and seg["n_seeds"] == "2" and seg["seeds"] == "0;1"
    assert float(seg["std"]) == pytest.approx(0.565685, abs=1e-5)
    assert float(seg["paper_value"]) == 83.1 and float(seg["paper_delta"]) == pytest.approx(0.3)
    assert seg["config_hash"] == "cfg0;cfg1" and seg["code_version"] == "0.1.0"
    assert json.loads(seg["protocol"]) == {"resolution": 448}
    assert json.loads(seg["packages"]) == {"numpy": "2.0"}
    assert seg["timestamp"] == "2025-03-01T12:00:00+00:00" and seg["limit"] == ""
    assert records[0]["std"] == "" and records[0]["paper_value"] == ""
    for col in ("device", "wall_time_s", "images_per_s", "peak_memory_mb", "checkpoint_hash", "task_version"):
        assert seg[col] != ""


def test_export_is_atomic(rows: list[ResultRow], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "leaderboard.csv"
    path.write_text("old content\n")
    real_to_csv = pd.DataFrame.to_csv

    def failing_to_csv(self, buf, **kwargs):
        buf.write("backbone,task\nhalf a li")  # part of the file is written, then the disk fails
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_leaderboard(rows, path, paper=PAPER)
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    monkeypatch.setattr(report.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("replace failed")))
    with pytest.raises(OSError, match="replace failed"):
        export_leaderboard(rows, path, paper=PAPER)
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]


def test_export_parquet_round_trips(rows: list[ResultRow], tmp_path: Path) -> None:
    csv_path = export_leaderboard(rows, tmp_path / "board.csv", paper=PAPER)
    pq_path = export_leaderboard(rows, tmp_path / "board.parquet", paper=PAPER)
    from_csv, from_pq = pd.read_csv(csv_path), pd.read_parquet(pq_path)
    assert list(from_pq.columns) == list(report.LEADERBOARD_COLUMNS) == list(from_csv.columns)
    assert from_pq["mean"].tolist() == pytest.approx(from_csv["mean"].tolist())
    seg = from_pq[(from_pq.backbone == "tips_g14") & (from_pq.task == "voc_seg")].iloc[0]
    assert seg["n_seeds"] == 2 and seg["paper_value"] == 83.1 and json.loads(seg["protocol"]) == {"resolution": 448}
    assert seg["protocol_mode"] == "cached" and pd.isna(seg["limit"])
    assert str(from_pq["n_seeds"].dtype) == "int64" and str(from_pq["higher_is_better"].dtype) == "bool"
    with pytest.raises(TipsBenchError, match="name it .csv or .parquet"):
        export_leaderboard(rows, tmp_path / "board.xlsx", paper=PAPER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.csv", "board.parquet"]


def test_protocol_mode_and_frame_are_carried(tmp_path: Path) -> None:
    faithful = {"resolution": 448, "mode": "faithful", "frame": "original label size"}
    data = [row("tips_g14", "voc_seg", "mIoU", 83.0, protocol=faithful), row("clip_l14", "voc_seg", "mIoU", 74.0)]
    long = report.comparison_frame(data, paper=PAPER)
    assert dict(zip(long.backbone, long.protocol_mode, strict=True)) == {"clip_l14": "cached", "tips_g14": "faithful"}
    assert dict(zip(long.backbone, long.protocol_frame, strict=True))["tips_g14"] == "original label size"
    assert long.set_index("backbone").loc["tips_g14", "delta"] == pytest.approx(-0.1)


# ---------------------------------------------------------------- paper reference


@pytest.fixture(scope="module")
def paper() -> list[dict]:
    return load_paper_reference()


def _value(paper: list[dict], backbone: str, task: str, metric: str, source_prefix: str) -> float:
    hits = [r["value"] for r in paper if (r["backbone"], r["task"], r["metric"]) == (backbone, task, metric)
            and r["source"].startswith(source_prefix)]
    assert len(hits) == 1, (backbone, task, metric, source_prefix, hits)
    return hits[0]


def test_paper_reference_cells_checked_by_hand(paper: list[dict]) -> None:
    # Values read off paper_protocol.md §3 by hand.
    assert _value(paper, "tips_g14", "voc_seg", "mIoU", "TIPS v1 Table 2") == 83.1
    assert _value(paper, "tips_g14", "voc_seg", "mIoU", "google-deepmind/tips README") == 83.1
    assert _value(paper, "tips_g14_lr", "uned_retrieval", "R@1", "TIPS v1 Table 2") == 71.5
    assert _value(paper, "tipsv2_l14", "ade150_zeroseg", "mIoU", "google-deepmind/tips README") == 24.7
    assert _value(paper, "tipsv2_l14", "ade150_zeroseg", "mIoU", "TIPSv2 Table 5") == 24.7
    assert _value(paper, "clip_l14", "flickr_retrieval", "i2t_R@1", "TIPS v1 Table 3") == 85.2
    assert _value(paper, "tips_g14", "flickr_retrieval", "t2i_R@1", "google-deepmind/tips README") == 83.8
    assert _value(paper, "tips_s14", "nyu_depth", "rmse", "google-deepmind/tips README") == 0.425
    assert _value(paper, "dinov2_g14", "nyu_depth", "rmse", "TIPS v1 Table 2") == 0.344
    assert _value(paper, "dinov2_g14", "nyu_depth", "rmse", "TIPSv2 Table 7") == 0.372
    assert _value(paper, "tipsv2_g14", "docci_retrieval", "t2i_R@1", "TIPSv2 Table 6") == 72.8
    assert _value(paper, "siglip_so400m14", "imagenet_zeroshot", "top1", "TIPS v1 Table 3") == 83.2
    unreleased = [r for r in paper if r["paper_model"] == "TIPS-g/14 HR" and r["task"] == "ade20k_seg"]
    assert [(r["backbone"], r["value"]) for r in unreleased] == [("", 49.9)]


def test_paper_reference_is_well_formed(paper: list[dict]) -> None:
    assert len(paper) > 250
    assert {r["backbone"] for r in paper} <= ALLOWED_BACKBONES
    assert {(r["task"], r["metric"]) for r in paper} <= ALLOWED_TASK_METRICS
    keys = Counter((r["backbone"], r["paper_model"], r["task"], r["metric"], r["source"]) for r in paper)
    assert [k for k, n in keys.items() if n > 1] == []
    assert all(r["higher_is_better"] == (r["metric"] != "rmse") for r in paper)
    assert all(r["paper_model"] and r["source"] for r in paper)
    third = [r for r in paper if r["source"].startswith("TIPSv2 Table")]
    assert third and all("[third-party notes]" in r["source"] for r in third)
    dino = [r for r in paper if r["backbone"] == "dinov2_g14" and r["task"] == "nyu_depth"]
    assert all("differs" in r["note"] for r in dino)


def test_default_paper_path_points_at_source_checkout() -> None:
    path = report.default_paper_reference_path()
    assert path.name == "paper_reference.csv" and path.is_file()
