"""Hand-computed checks of tips_bench.metrics (the arithmetic is spelled out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tips_bench.metrics import (
    DepthMeter,
    NormalsMeter,
    SegmentationMeter,
    angular_errors_deg,
    confusion_matrix,
    correspondence_recall,
    depth_errors,
    normals_scores,
    pck,
    retrieval_recall,
    segmentation_scores,
    top_k_accuracy,
)

# ---------------------------------------------------------------------------------------------- segmentation


def test_confusion_and_scores_by_hand() -> None:
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    # Scored pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0); the (255, 2) pixel is ignored.
    cm = confusion_matrix(pred, gt, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    s = segmentation_scores(cm)
    # I = [1, 2, 0, 0]; L (rows) = [2, 2, 1, 0]; P (cols) = [2, 3, 0, 0]; U = P + L - I = [3, 3, 1, 0]
    # IoU = [1/3, 2/3, 0, nan] -> class 3 (absent everywhere) skipped -> mIoU = (1/3 + 2/3 + 0) / 3 = 1/3
    np.testing.assert_allclose(s["IoU"][:3], [100 / 3, 200 / 3, 0.0])
    assert math.isnan(s["IoU"][3])
    assert s["mIoU"] == pytest.approx(100 / 3)
    # aAcc = sum(I) / sum(L) = 3 / 5; Acc = I / L = [1/2, 1, 0, nan] -> mAcc = 1.5 / 3 = 0.5
    assert s["aAcc"] == pytest.approx(60.0)
    assert s["mAcc"] == pytest.approx(50.0)


def test_ignore_index_pixels_do_not_count_even_with_a_prediction() -> None:
    gt = np.array([5, 5, 0, 1])
    pred = np.array([1, 1, 0, 1])
    # With ignore_index=5 only (0,0) and (1,1) are scored: perfect.
    s = segmentation_scores(confusion_matrix(pred, gt, num_classes=2, ignore_index=5))
    assert s["mIoU"] == pytest.approx(100.0)
    assert s["aAcc"] == pytest.approx(100.0)


def test_absent_classes_are_skipped_not_zero() -> None:
    # 150 classes, only class 7 present in pred and gt -> mIoU is 100, not 100/150.
    gt = np.full((4, 4), 7)
    m = SegmentationMeter(num_classes=150)
    m.update(gt.copy(), gt)
    out = m.compute()
    assert out["mIoU"] == pytest.approx(100.0)
    assert np.isnan(out["IoU"]).sum() == 149


def test_class_only_in_prediction_counts_as_zero_iou() -> None:
    gt = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 2])
    # I = [3, 0, 0]; U = [4, nan-class, 1] -> IoU = [0.75, nan, 0] -> mIoU = 37.5
    s = segmentation_scores(confusion_matrix(pred, gt, num_classes=3))
    assert s["mIoU"] == pytest.approx(37.5)


def test_dataset_level_differs_from_per_image_mean() -> None:
    gt_a, pred_a = np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])
    gt_b, pred_b = np.array([1, 1, 1, 1]), np.array([1, 1, 1, 0])
    # Image A: IoU0 = 1, class 1 absent -> mIoU_A = 100.
    # Image B: I = [0, 3], P = [1, 3], L = [0, 4], U = [1, 4] -> IoU = [0, .75] -> mIoU_B = 37.5.
    # Per-image mean = (100 + 37.5) / 2 = 68.75.
    # Dataset: I = [4, 3], P = [5, 3], L = [4, 4], U = [5, 4] -> IoU = [.8, .75] -> mIoU = 77.5.
    per_image = [
        segmentation_scores(confusion_matrix(p, g, 2))["mIoU"] for p, g in ((pred_a, gt_a), (pred_b, gt_b))
    ]
    assert np.mean(per_image) == pytest.approx(68.75)
    meter = SegmentationMeter(num_classes=2)
    meter.update(pred_a, gt_a)
    meter.update(pred_b, gt_b)
    assert meter.compute()["mIoU"] == pytest.approx(77.5)
    meter.reset()
    assert meter.confusion.sum() == 0


def test_perfect_segmentation_is_100() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 21, size=(2, 16, 16))
    gt[0, :2] = 255
    pred = np.where(gt == 255, 3, gt)
    s = segmentation_scores(confusion_matrix(pred, gt, 21))
    assert s["mIoU"] == pytest.approx(100.0)
    assert s["aAcc"] == pytest.approx(100.0)
    assert s["mAcc"] == pytest.approx(100.0)


def test_confusion_matrix_matches_naive_loop() -> None:
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 5, size=300)
    gt[rng.random(300) < 0.1] = 255
    pred = rng.integers(0, 5, size=300)
    naive = np.zeros((5, 5), dtype=np.int64)
    for g, p in zip(gt, pred, strict=True):
        if g != 255:
            naive[g, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 5), naive)


def test_confusion_matrix_rejects_bad_labels() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0, 7]), num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 9]), np.array([0, 1]), num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1, 1]), np.array([0, 1]), num_classes=3)


# ----------------------------------------------------------------------------------------------------- depth


def test_depth_errors_by_hand() -> None:
    gt = np.array([1.0, 2.0, 4.0, 0.0])  # last pixel invalid (gt = 0)
    pred = np.array([1.0, 1.0, 6.0, 3.0])
    e = depth_errors(pred, gt, gt > 0)
    # valid: p = [1, 1, 6], g = [1, 2, 4]; diff = [0, -1, 2]
    assert e["abs_rel"] == pytest.approx((0 + 1 / 2 + 2 / 4) / 3)  # = 1/3
    assert e["sq_rel"] == pytest.approx((0 + 1 / 2 + 4 / 4) / 3)  # = 0.5
    assert e["rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    # max(g/p, p/g) = [1, 2, 1.5]; thresholds 1.25, 1.5625, 1.953125
    assert e["d1"] == pytest.approx(100 / 3)
    assert e["d2"] == pytest.approx(200 / 3)
    assert e["d3"] == pytest.approx(200 / 3)
    # e = ln p - ln g = [0, -ln 2, ln 1.5]
    ln2, ln15 = math.log(2), math.log(1.5)
    assert e["rmse_log"] == pytest.approx(math.sqrt((ln2**2 + ln15**2) / 3))
    assert e["log10"] == pytest.approx((math.log10(2) + math.log10(1.5)) / 3)
    mean_e, mean_e2 = (ln15 - ln2) / 3, (ln2**2 + ln15**2) / 3
    assert e["silog"] == pytest.approx(math.sqrt(mean_e2 - mean_e**2) * 100)  # variant A (BTS)


def test_depth_default_valid_is_positive_gt() -> None:
    gt = np.array([1.0, 0.0])
    pred = np.array([1.0, 5.0])
    assert depth_errors(pred, gt)["rmse"] == 0.0


def test_silog_is_scale_invariant_and_zero_for_scaled_prediction() -> None:
    gt = np.array([1.0, 2.0, 3.0, 7.0])
    e = depth_errors(2.5 * gt, gt, np.ones(4, bool))
    # e = ln 2.5 everywhere -> var(e) = 0 -> silog 0, rmse_log = ln 2.5
    assert e["silog"] == pytest.approx(0.0, abs=1e-6)
    assert e["rmse_log"] == pytest.approx(math.log(2.5))


def test_perfect_depth() -> None:
    gt = np.random.default_rng(0).uniform(0.5, 10, size=(8, 8))
    e = depth_errors(gt.copy(), gt, gt > 0)
    assert e["rmse"] == 0.0 and e["abs_rel"] == 0.0 and e["silog"] == 0.0
    assert e["d1"] == e["d2"] == e["d3"] == 100.0


def test_depth_no_valid_pixel_gives_nan_and_bad_pred_raises() -> None:
    gt = np.zeros(3)
    assert all(math.isnan(v) for v in depth_errors(np.ones(3), gt, gt > 0).values())
    with pytest.raises(ValueError):
        depth_errors(np.array([0.0, 1.0]), np.array([1.0, 1.0]))


def test_depth_meter_averages_per_image_not_per_pixel() -> None:
    m = DepthMeter()
    m.update(np.array([2.0, 2.0]), np.array([1.0, 1.0]))  # rmse 1
    m.update(np.ones(4), np.ones(4))  # rmse 0
    out = m.compute()
    # per-image mean = (1 + 0) / 2 = 0.5; pooled over the 6 pixels would be sqrt(2/6) = 0.577
    assert out["rmse"] == pytest.approx(0.5)
    assert out["d1"] == pytest.approx(50.0)  # image 1: ratio 2 -> 0 %, image 2: 100 %
    assert out["n_images"] == 2


def test_depth_meter_range_mask_and_bts_clamping() -> None:
    m = DepthMeter(min_depth=0.1, max_depth=10.0)
    gt = np.array([1.0, 1.0, 5.0, 5.0, 20.0, 0.05])  # last two out of range -> not scored
    pred = np.array([0.0, np.nan, np.inf, 50.0, 1.0, 1.0])
    # clamped pred on valid pixels: [0.1, 0.1, 10, 10] vs gt [1, 1, 5, 5]
    e = m.update(pred, gt)
    assert e["abs_rel"] == pytest.approx((0.9 + 0.9 + 1.0 + 1.0) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((0.81 + 0.81 + 25 + 25) / 4))
    # an extra mask removes pixels too
    e2 = DepthMeter(min_depth=0.1, max_depth=10.0).update(pred, gt, valid=np.array([1, 1, 0, 0, 1, 1], bool))
    assert e2["rmse"] == pytest.approx(0.9)


def test_depth_meter_skips_empty_images() -> None:
    m = DepthMeter(min_depth=0.1, max_depth=10.0)
    m.update(np.ones(2), np.array([20.0, 30.0]))
    m.update(np.ones(2), np.ones(2))
    out = m.compute()
    assert out["n_images"] == 1 and m.n_skipped == 1
    assert out["rmse"] == 0.0


# --------------------------------------------------------------------------------------------------- normals


def test_angular_errors_by_hand() -> None:
    pred = np.array([[1.0, 0, 0], [1, 1, 0], [2, 0, 0], [-1, 0, 0], [0, 0, 1]])
    gt = np.array([[0.0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    valid = np.array([True, True, True, True, False])
    # 90° (orthogonal), 45° (pred normalised), 0° (scale ignored), 180° (opposite); last pixel dropped
    np.testing.assert_allclose(angular_errors_deg(pred, gt, valid), [90, 45, 0, 180], atol=1e-9)


def test_angular_errors_clamp_cosine_and_channel_first() -> None:
    v = np.full((1, 1, 3), 1 / math.sqrt(3)) * (1 + 1e-16)
    err = angular_errors_deg(v, v)
    assert not np.isnan(err).any() and err[0] == pytest.approx(0.0, abs=1e-6)
    pred_chw = np.stack([np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))])
    gt_chw = np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2))])
    np.testing.assert_allclose(angular_errors_deg(pred_chw, gt_chw, axis=0), [90] * 4)


def test_normals_scores_by_hand() -> None:
    s = normals_scores(np.array([0.0, 10.0, 20.0, 40.0]))
    assert s["mean"] == pytest.approx(17.5)  # 70 / 4
    assert s["median"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert s["rmse"] == pytest.approx(math.sqrt((0 + 100 + 400 + 1600) / 4))
    assert s["pct_11_25"] == pytest.approx(50.0)  # 0, 10
    assert s["pct_22_5"] == pytest.approx(75.0)  # 0, 10, 20
    assert s["pct_30"] == pytest.approx(75.0)


def test_normals_meter_pooled_vs_per_image() -> None:
    m = NormalsMeter()
    m.update_errors(np.array([10.0]))
    m.update_errors(np.array([30.0, 30.0, 30.0]))
    out = m.compute()
    # pooled over 4 pixels [10, 30, 30, 30]: mean 25, median 30, rmse sqrt(2800/4), <30°: 1/4
    assert out["mean_pooled"] == pytest.approx(25.0)
    assert out["median_pooled"] == pytest.approx(30.0, abs=1e-3)
    assert out["rmse_pooled"] == pytest.approx(math.sqrt(700))
    assert out["pct_30_pooled"] == pytest.approx(25.0)
    # per image then averaged (probe3d, the unsuffixed headline keys): mean (10 + 30) / 2 = 20, rmse 20,
    # <30°: (100 + 0) / 2 = 50
    assert out["mean"] == pytest.approx(20.0)
    assert out["median"] == pytest.approx(20.0)
    assert out["rmse"] == pytest.approx(20.0)
    assert out["pct_30"] == pytest.approx(50.0)
    assert out["n_pixels"] == 4 and out["n_images"] == 2


def test_normals_meter_pooled_matches_normals_scores() -> None:
    rng = np.random.default_rng(0)
    m = NormalsMeter()
    all_errors = []
    for n in (7, 12, 1, 30):
        pred = rng.normal(size=(n, 3))
        gt = rng.normal(size=(n, 3))
        m.update(pred, gt, np.ones(n, bool))
        all_errors.append(angular_errors_deg(pred, gt))
    ref = normals_scores(np.concatenate(all_errors))
    out = m.compute()
    for k in ("mean", "rmse", "pct_11_25", "pct_22_5", "pct_30"):
        assert out[f"{k}_pooled"] == pytest.approx(ref[k])
    assert out["median_pooled"] == pytest.approx(ref["median"], abs=1e-3)  # histogram median, 0.001° bins


def test_perfect_normals() -> None:
    n = np.random.default_rng(0).normal(size=(4, 4, 3))
    m = NormalsMeter()
    m.update(n, n.copy())
    out = m.compute()
    assert out["rmse"] == pytest.approx(0.0, abs=1e-5) and out["pct_11_25"] == 100.0


# ------------------------------------------------------------------------------------------- classification


def test_top_k_accuracy_by_hand_with_ties() -> None:
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.2, 0.5], [0.2, 0.2, 0.6]])
    labels = np.array([1, 0, 1])
    # sample 0: class 1 is the highest -> rank 0
    # sample 1: class 0 (0.3) is beaten by 0.5 -> rank 1
    # sample 2: class 1 (0.2) is beaten by 0.6 and by the tie 0.2 at the lower index 0 -> rank 2
    acc = top_k_accuracy(scores, labels, k=(1, 2, 3, 10))
    assert acc == pytest.approx({"top1": 100 / 3, "top2": 200 / 3, "top3": 100.0, "top10": 100.0})
    assert top_k_accuracy(scores, labels, k=1) == pytest.approx({"top1": 100 / 3})


# -------------------------------------------------------------------------------------------------- retrieval


def test_retrieval_recall_by_hand() -> None:
    image_of_text = np.array([0, 0, 1, 2, 2])
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # t0 -> img0: rank 0
            [0.3, 0.8, 0.1],  # t1 -> img0: 0.8 above -> rank 1
            [0.1, 0.2, 0.7],  # t2 -> img1: 0.7 above -> rank 1
            [0.1, 0.2, 0.6],  # t3 -> img2: rank 0
            [0.5, 0.5, 0.5],  # t4 -> img2: tied with img0, img1 (lower indices) -> rank 2
        ]
    )
    r = retrieval_recall(sim, image_of_text, ks=(1, 2, 3))
    # t2i ranks [0, 1, 1, 0, 2]
    assert r["t2i_R@1"] == pytest.approx(40.0)
    assert r["t2i_R@2"] == pytest.approx(80.0)
    assert r["t2i_R@3"] == pytest.approx(100.0)
    # i2t, columns of sim:
    # img0 [.9 .3 .1 .1 .5], captions t0, t1: best t0 (0.9) -> rank 0
    # img1 [.1 .8 .2 .2 .5], caption t2 (0.2): above are 0.8, 0.5; t3's tie has a higher index -> rank 2
    # img2 [.2 .1 .7 .6 .5], captions t3, t4: best t3 (0.6), only 0.7 above -> rank 1
    assert r["i2t_R@1"] == pytest.approx(100 / 3)
    assert r["i2t_R@2"] == pytest.approx(200 / 3)
    assert r["i2t_R@3"] == pytest.approx(100.0)


def test_retrieval_identical_embeddings_give_100() -> None:
    rng = np.random.default_rng(0)
    images = np.linalg.qr(rng.normal(size=(16, 6)))[0].T  # 6 orthonormal image embeddings
    image_of_text = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    texts = images[image_of_text]
    r = retrieval_recall(texts @ images.T, image_of_text)
    assert set(r) == {f"{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)}
    assert all(v == 100.0 for v in r.values())


def test_retrieval_rejects_image_without_caption() -> None:
    with pytest.raises(ValueError):
        retrieval_recall(np.zeros((2, 3)), np.array([0, 1]))


# ------------------------------------------------------------------------------------------- correspondence


def test_correspondence_recall_by_hand() -> None:
    gt = np.zeros((4, 2))
    pred = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [1.0, 1.0]])
    valid = np.array([True, True, True, False])
    # errors of valid points: [0, 5, 10]; strict "<": <5 -> 1/3, <10 -> 2/3, <10.5 -> 3/3
    r = correspondence_recall(pred, gt, valid, thresholds=(5, 10, 10.5))
    assert r == pytest.approx({"recall@5px": 100 / 3, "recall@10px": 200 / 3, "recall@10.5px": 100.0})


def test_pck_by_hand() -> None:
    gt = np.zeros((3, 2))
    pred = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # errors 0, 5, 10
    bbox = np.array([10.0, 20.0, 50.0, 120.0])  # w = 40, h = 100 -> thr = 0.1 * 100 = 10
    assert pck(pred, gt, None, bbox) == pytest.approx(100.0)  # 10 <= 10: SPair's evaluator counts it
    assert pck(pred, gt, None, bbox, alpha=0.05) == pytest.approx(200 / 3)  # thr 5: errors 0 and 5
    assert pck(pred, gt, None, bbox, alpha=0.049) == pytest.approx(100 / 3)  # thr 4.9: only 0
    # batched: pair 2 has a 60-pixel bbox (thr 6) and its last point invalid -> errors [0, 5] both < 6
    boxes = np.stack([bbox, np.array([0.0, 0.0, 60.0, 30.0])])
    valid = np.array([[True, True, True], [True, True, False]])
    # pooled: pair 1 has 3 of 3 correct, pair 2 has 2 of 2 -> 5 / 5
    assert pck(np.stack([pred, pred]), np.stack([gt, gt]), valid, boxes) == pytest.approx(100.0)
