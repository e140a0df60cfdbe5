"""Cross-check tips_bench.metrics against mmsegmentation's IoUMetric and DepthMetric on random data.

Runs only where mmsegmentation is installed (``tox -e mmseg``). Differences in convention that are accounted
for here: mmseg reports d1-d3 as fractions (ours: percent), rounds its mIoU/aAcc/mAcc summary to 2 decimals
(per-class values are compared unrounded through ``total_area_to_metrics``), does not clamp predictions (our
meter runs with ``clamp_pred=False``), and uses silog variant B, sqrt(mean(e²) - 0.5·mean(e)²) without ×100,
whereas ours is variant A (BTS), sqrt(mean(e²) - mean(e)²)·100. Variant B is rebuilt per image from our
rmse_log and silog (mean(e)² = rmse_log² - (silog/100)²) and compared to mmseg's value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mmseg")
torch = pytest.importorskip("torch")
from mmseg.evaluation.metrics import DepthMetric, IoUMetric  # noqa: E402

from tips_bench.metrics import DepthMeter, SegmentationMeter, depth_errors  # noqa: E402

NUM_CLASSES = 7


def _seg_data(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for h, w in ((16, 20), (9, 31), (24, 24), (5, 7)):
        gt = rng.choice([0, 1, 2, 4], size=(h, w))  # classes 3, 5, 6 never in GT
        gt[rng.random((h, w)) < 0.15] = 255
        pred = rng.choice([0, 1, 2, 3, 4], size=(h, w))  # class 3 only predicted; 5, 6 absent everywhere
        keep = rng.random((h, w)) < 0.5
        pred[keep & (gt != 255)] = gt[keep & (gt != 255)]
        pairs.append((pred, gt))
    return pairs


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # mmseg's 0/0
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_meter_matches_iou_metric(seed: int) -> None:
    pairs = _seg_data(seed)
    ours = SegmentationMeter(NUM_CLASSES, ignore_index=255)
    ref = IoUMetric(ignore_index=255, iou_metrics=["mIoU"])
    ref.dataset_meta = {"classes": [f"c{i}" for i in range(NUM_CLASSES)]}
    totals = [torch.zeros(NUM_CLASSES, dtype=torch.float64) for _ in range(4)]
    for pred, gt in pairs:
        ours.update(pred, gt)
        p, g = torch.from_numpy(pred), torch.from_numpy(gt)
        ref.process({}, [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": g[None]}}])
        for i, area in enumerate(IoUMetric.intersect_and_union(p, g, NUM_CLASSES, 255)):
            totals[i] += area.double()
    got = ours.compute()
    summary = ref.evaluate(len(pairs))  # rounded to 2 decimals, in percent
    assert got["mIoU"] == pytest.approx(summary["mIoU"], abs=0.0051)
    assert got["aAcc"] == pytest.approx(summary["aAcc"], abs=0.0051)
    assert got["mAcc"] == pytest.approx(summary["mAcc"], abs=0.0051)

    per_class = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    np.testing.assert_allclose(got["IoU"], np.asarray(per_class["IoU"]) * 100, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["Acc"], np.asarray(per_class["Acc"]) * 100, rtol=1e-12, equal_nan=True)
    assert got["aAcc"] == pytest.approx(float(per_class["aAcc"]) * 100, rel=1e-12)
    assert np.isnan(got["IoU"][[5, 6]]).all() and got["IoU"][3] == 0.0


def _depth_data(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for h, w in ((12, 16), (20, 9), (8, 8)):
        gt = rng.uniform(0.05, 12.0, size=(h, w))
        gt[rng.random((h, w)) < 0.2] = 0.0
        pred = gt * rng.uniform(0.7, 1.4, size=(h, w)) + rng.normal(0, 0.1, size=(h, w))
        pairs.append((np.clip(pred, 0.01, None), gt))
    return pairs


@pytest.mark.parametrize("seed", [0, 1])
def test_depth_meter_matches_depth_metric(seed: int) -> None:
    min_d, max_d = 1e-3, 10.0
    pairs = _depth_data(seed)
    ours = DepthMeter(min_depth=min_d, max_depth=max_d, clamp_pred=False)
    ref = DepthMetric(min_depth_eval=min_d, max_depth_eval=max_d)
    silog_b = []
    for pred, gt in pairs:
        ours.update(pred, gt)
        ref.process(
            {},
            [
                {
                    "pred_depth_map": {"data": torch.from_numpy(pred)[None]},
                    "gt_depth_map": {"data": torch.from_numpy(gt)[None]},
                }
            ],
        )
        e = depth_errors(pred, gt, (gt > min_d) & (gt < max_d))
        mean_e_sq = e["rmse_log"] ** 2 - (e["silog"] / 100) ** 2  # mean(e)² from our variant-A silog
        silog_b.append(math.sqrt(e["rmse_log"] ** 2 - 0.5 * mean_e_sq))
    got = ours.compute()
    want = ref.compute_metrics(ref.results)
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    for key in ("d1", "d2", "d3"):
        # mmseg: fraction, divided in float32 (.float()); ours: percent
        assert got[key] == pytest.approx(want[key] * 100, rel=1e-6), key
    assert np.mean(silog_b) == pytest.approx(want["silog"], rel=1e-9)  # variant B


def test_silog_variants_differ_on_a_scaled_prediction() -> None:
    gt = np.array([[1.0, 2.0], [3.0, 5.0]])
    pred = 2.0 * gt  # e = ln 2 everywhere
    ref = DepthMetric()
    ref.process(
        {},
        [
            {
                "pred_depth_map": {"data": torch.from_numpy(pred)},
                "gt_depth_map": {"data": torch.from_numpy(gt)},
            }
        ],
    )
    # variant B (mmseg): sqrt(ln²2 - 0.5·ln²2) = ln 2 / sqrt 2; variant A (ours, BTS): sqrt(ln²2 - ln²2) = 0
    assert ref.compute_metrics(ref.results)["silog"] == pytest.approx(math.log(2) / math.sqrt(2))
    assert depth_errors(pred, gt)["silog"] == pytest.approx(0.0, abs=1e-6)
