"""The HTML report: colour maps, PCA, the artifacts files, the page, and the page as headless Chromium draws it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tips_bench import colorize
from tips_bench.artifacts import Example, artifact_path, load_examples, save_examples
from tips_bench.report_html import write_html_report
from tips_bench.results import ResultRow, ResultsStore

PAPER = [{"backbone": "tips_g14", "paper_model": "TIPS-g/14 HR", "task": "voc_seg", "metric": "mIoU", "value": 83.1,
          "higher_is_better": True, "source": "TIPS v1 Table 2", "note": ""}]


def row(backbone: str, task: str, metric: str, value: float, seed: int = 0, kind: str = "segmentation",
        run_id: str | None = None, **protocol) -> ResultRow:
    return ResultRow(
        run_id=run_id or f"{backbone}-{task}", timestamp="2025-03-01T12:00:00+00:00", backbone=backbone,
        backbone_family=backbone.split("_")[0], task=task, task_version=1, dataset=task, split="val",
        metric=metric, value=value, higher_is_better=metric != "rmse", seed=seed,
        protocol={"type": kind, **protocol}, config_hash="c", checkpoint_hash="k", code_version="0.1.0",
        packages={}, device="cpu", wall_time_s=1.0, images_per_s=1.0, peak_memory_mb=1.0, num_samples=4)


def synthetic_examples(kind: str, n: int = 2, size: int = 28, dim: int = 16) -> list[Example]:
    """Images split into a left and a right object; features differ between the halves."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = np.zeros((size, size, 3), dtype=np.uint8)
        image[:, : size // 2] = (200, 40 + 40 * i, 40)
        image[:, size // 2 :] = (30, 60, 220)
        left = np.zeros((size, size), dtype=bool)
        left[:, : size // 2] = True
        if kind == "segmentation":
            target = np.where(left, 1, 2).astype(np.int64)
            target[:2] = 255
            prediction = target.copy()
            prediction[-3:] = 0
        elif kind == "depth":
            target = np.where(left, 1.0, 3.0) + rng.random((size, size)) * 0.1
            target[0, 0] = 0.0
            prediction = target * 1.05
        else:
            target = np.zeros((size, size, 3))
            target[left] = (0, 0, 1)
            target[~left] = (1, 0, 0)
            prediction = target + rng.normal(0, 0.1, target.shape)
        grid = size // 14
        feats = rng.normal(0, 0.05, (dim, grid, grid))
        feats[0, :, : grid // 2 or 1] += 3.0
        out.append(Example(image, target, prediction, kind, feats.astype(np.float32)))
    return out


# ---------------------------------------------------------------- colour maps and PCA


def test_label_colors_palette_and_ignore() -> None:
    palette = colorize.label_palette(21)
    assert len({tuple(c) for c in palette}) == 21 and (palette.sum(axis=1) > 0).all()
    labels = np.array([[0, 1], [255, -1]])
    rgb = colorize.label_colors(labels, num_classes=21)
    assert (rgb[1] == 0).all() and tuple(rgb[0, 0]) == tuple(palette[0]) and tuple(rgb[0, 1]) == tuple(palette[1])


def test_depth_and_normal_colors() -> None:
    depth = np.array([[0.0, 1.0], [2.0, np.nan]])
    lo, hi = colorize.depth_range([depth])
    rgb = colorize.depth_colors(depth, lo, hi)
    assert (rgb[0, 0] == 0).all() and (rgb[1, 1] == 0).all() and not (rgb[0, 1] == rgb[1, 0]).all()
    normals = np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    assert colorize.normal_colors(normals).tolist() == [[[128, 128, 255], [0, 0, 0]]]


def test_pca_separates_structure_and_is_deterministic() -> None:
    feats = [e.patch_features for e in synthetic_examples("segmentation", size=56)]
    maps = colorize.pca_rgb(feats)
    assert [m.shape for m in maps] == [(4, 4, 3), (4, 4, 3)] and maps[0].dtype == np.uint8
    first = maps[0][..., 0].astype(int)
    assert first[:, :2].min() - first[:, 2:].max() > 150  # the first component splits the halves
    again = colorize.pca_rgb([f * 2 + 5 for f in feats])  # scaled and shifted features give the same colours
    assert all((a == b).all() for a, b in zip(maps, again, strict=True))
    assert colorize.upscale(maps[0], 56, 56).shape == (56, 56, 3)
    assert colorize.pca_rgb([np.ones((2, 3, 3))])[0][..., 2].max() == 0  # fewer than 3 dims: blue stays black


# ---------------------------------------------------------------- artifacts


def test_save_and_load_examples(tmp_path: Path) -> None:
    results = tmp_path / "runs.jsonl"
    path = save_examples(results, "run1", "tips_b14", "voc_seg", synthetic_examples("segmentation"))
    assert path == tmp_path / "runs.jsonl.artifacts" / "run1" / "tips_b14__voc_seg.npz"
    back = load_examples(path)
    assert len(back) == 2 and back[0].kind == "segmentation" and back[0].target.dtype == np.int32
    assert np.allclose(back[0].patch_features, synthetic_examples("segmentation")[0].patch_features, atol=1e-2)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    bad = {"image": np.zeros((4, 4, 3), np.uint8), "target": np.zeros((4, 5)), "prediction": np.zeros((4, 4)),
           "kind": "depth", "patch_features": np.zeros((2, 1, 1))}
    with pytest.raises(ValueError, match="target of a depth example must have shape"):
        save_examples(results, "run2", "b", "t", [bad])
    with pytest.raises(ValueError, match="kind 'flow'"):
        save_examples(results, "run2", "b", "t", [{**bad, "target": np.zeros((4, 4)), "kind": "flow"}])
    assert not (tmp_path / "runs.jsonl.artifacts" / "run2").exists()
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable examples file"):
        load_examples(path)


# ---------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("page")
    results = tmp_path / "runs.jsonl"
    rows = [
        row("tips_g14", "voc_seg", "mIoU", 83.0, seed=0), row("tips_g14", "voc_seg", "mIoU", 83.8, seed=1),
        row("clip_l14", "voc_seg", "mIoU", 74.25, mode="faithful", frame="original label size"),
        row("tips_g14", "nyu_depth", "rmse", 0.3625, kind="depth"),
        row("clip_l14", "nyu_depth", "rmse", 0.512, kind="depth"),
        row("tips_g14", "toy_normals", "rmse", 31.5, kind="normals"),
        row("tips_g14", "imagenet_knn", "top1", 79.9, kind="knn"),
    ]
    ResultsStore(results).append(rows)
    save_examples(results, "tips_g14-voc_seg", "tips_g14", "voc_seg", synthetic_examples("segmentation"))
    save_examples(results, "tips_g14-nyu_depth", "tips_g14", "nyu_depth", synthetic_examples("depth"))
    save_examples(results, "tips_g14-toy_normals", "tips_g14", "toy_normals", synthetic_examples("normals"))
    artifact_path(results, "clip_l14-nyu_depth", "clip_l14", "nyu_depth").parent.mkdir(parents=True)
    artifact_path(results, "clip_l14-nyu_depth", "clip_l14", "nyu_depth").write_bytes(b"broken")
    return write_html_report(ResultsStore(results).frame(), tmp_path / "html", results_path=results, paper=PAPER)


def test_page_is_self_contained_with_table_charts_and_panels(page: Path) -> None:
    text = page.read_text()
    assert re.search(r"(src|href)=\"(https?:)?//", text) is None and "<script" not in text and "<link" not in text
    assert re.search(r"url\((?!#)", text) is None and "Content-Security-Policy" in text  # only in-page refs
    assert ">83.4<" in text and ">0.6<" in text and ">83.1<" in text and ">+0.3<" in text  # ours, std, paper, Δ
    assert ">74.2<" in text or ">74.3<" in text
    assert ">0.362<" in text or ">0.363<" in text
    assert text.count('class="mode cached"') == 5 and text.count('class="mode faithful"') == 1
    assert "original label size" in text
    assert text.count('<div class="chart"><svg') == 4  # one per task
    assert text.count("data:image/png;base64,") == 3 * 2 * 4  # 3 panels x 2 examples x 4 images
    assert "examples of run clip_l14 are unreadable" in text
    assert "no examples were saved for run clip_l14" in text  # voc_seg of clip_l14 saved nothing
    assert "imagenet_knn" in text and text.count('<div class="panel">') == 5  # no panel for a global task
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "chromium-headless-shell"):
        if found := shutil.which(name):
            return found
    return None


def _headless(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HOME": str(tmp)})


def test_page_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("TIPS_BENCH_REQUIRE_CHROMIUM"):
            pytest.fail("TIPS_BENCH_REQUIRE_CHROMIUM is set but no chromium is installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    shot = tmp_path / "shot.png"
    done = _headless(browser, tmp_path, "--window-size=1280,2200", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2200, 1280) and pixels.std() > 20  # not blank
    top, middle = pixels[:700], pixels[700:1500]
    assert top.std() > 10 and middle.std() > 10
    colours = {tuple(c) for c in pixels[::7, ::7].reshape(-1, 3).astype(int)}
    assert len(colours) > 200  # text, charts and example images, not a flat page
    dom = _headless(browser, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert ">83.4<" in dom and ">83.1<" in dom and ">+0.3<" in dom and "voc_seg" in dom and "tips_g14" in dom


def test_cli_report_html_and_export_after_a_real_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from tips_bench.cli import main

    results = tmp_path / "runs.jsonl"
    monkeypatch.setenv("TIPS_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TIPS_BENCH_RESULTS", str(results))
    assert main(["run", "--backbone", "pixels", "--task", "toy_seg,toy_knn", "--limit", "8", "--set", "resolution=28",
                 "--set", "probe.epochs=1", "--no-progress"]) == 0
    seg_run = next(r.run_id for r in ResultsStore(results).rows() if r.task == "toy_seg")
    save_examples(results, seg_run, "pixels", "toy_seg", synthetic_examples("segmentation"))  # as the task will
    capsys.readouterr()
    assert main(["report", "--html", str(tmp_path / "html"), "--format", "markdown"]) == 0
    assert f"wrote {tmp_path / 'html' / 'index.html'}" in capsys.readouterr().out
    text = (tmp_path / "html" / "index.html").read_text()
    assert "toy_seg (cached) (smoke)" in text and "toy_knn (smoke)" in text and text.count("data:image/png") == 8
    assert f"run {seg_run[:8]}" in text

    assert main(["export", "--parquet", str(tmp_path / "board.parquet")]) == 0
    board = pd.read_parquet(tmp_path / "board.parquet")
    assert set(board["task"]) == {"toy_seg (cached) (smoke)", "toy_knn (smoke)"} and (board["n_seeds"] == 1).all()
    assert main(["export", "--out", str(tmp_path / "board.csv"), "--task", "toy_knn"]) == 0
    assert set(pd.read_csv(tmp_path / "board.csv")["task"]) == {"toy_knn (smoke)"}
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path / "board.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "name it .csv or .parquet" in err and err.count("\n") == 1 and not (tmp_path / "board.xlsx").exists()
    assert main(["report", "--html", str(tmp_path / "h2"), "--results", str(tmp_path / "none.jsonl")]) == 2
    assert "no results in" in capsys.readouterr().err and not (tmp_path / "h2").exists()
