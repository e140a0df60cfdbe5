"""Evaluation metrics: pure numpy functions and small streaming meters.

Conventions (used everywhere in this module):

* **Percent** (0-100): mIoU, aAcc, mAcc, per-class IoU/Acc, top-k accuracy, retrieval recall, correspondence
  recall, PCK, normals ``pct_*`` and depth ``d1``/``d2``/``d3``.
* **Data units**: depth ``rmse`` (metres when the depth is in metres), ``abs_rel``/``sq_rel``/``rmse_log``/
  ``log10`` are unitless; depth ``silog`` is variant A (BTS), i.e. already ×100; normals angles in degrees.
* **Ties** in any ranking are broken by index: among equal scores the lower index ranks first (what a stable
  descending sort gives). This makes every result independent of the sorting implementation.

Definitions follow ``/work/shared/reference/dataset_formats.md`` section 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "DepthMeter",
    "NormalsMeter",
    "SegmentationMeter",
    "angular_errors_deg",
    "confusion_matrix",
    "correspondence_recall",
    "depth_errors",
    "normals_scores",
    "pck",
    "retrieval_recall",
    "segmentation_scores",
    "top_k_accuracy",
]


# ----------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Confusion matrix ``M[gt_class, pred_class]`` (int64, (C, C)) over pixels whose gt != ignore_index.

    Reference: mmsegmentation ``IoUMetric.intersect_and_union`` (pixels labelled ``ignore_index`` dropped).
    The diagonal is the per-class intersection, row sums the GT area, column sums the predicted area.
    Raises ValueError for a non-ignored GT label or a prediction (on a scored pixel) outside [0, C).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    keep = gt != ignore_index
    g = gt[keep].astype(np.int64, copy=False)
    p = pred[keep].astype(np.int64, copy=False)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"gt labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted labels must lie in [0, {num_classes})")
    flat = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """mIoU / aAcc / mAcc (percent) from a confusion matrix summed over the whole dataset.

    Reference: mmsegmentation ``IoUMetric`` (``total_area_to_metrics``): IoU_c = I_c / (P_c + L_c - I_c);
    classes with an empty union (absent from both pred and GT) give NaN and are skipped by the nanmean;
    Acc_c = I_c / L_c (NaN for classes absent from the GT); aAcc = sum(I) / sum(L).
    Returns ``{"mIoU", "aAcc", "mAcc"}`` floats plus ``"IoU"`` and ``"Acc"`` per-class float64 arrays
    (percent, NaN where undefined). All-NaN inputs give NaN (no warning).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got {cm.shape}")
    inter = np.diag(cm)
    area_label = cm.sum(axis=1)
    area_pred = cm.sum(axis=0)
    union = area_pred + area_label - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union * 100.0
        acc = inter / area_label * 100.0
        total = area_label.sum()
        a_acc = float(inter.sum() / total * 100.0) if total > 0 else float("nan")
    return {
        "mIoU": _nanmean(iou),
        "aAcc": a_acc,
        "mAcc": _nanmean(acc),
        "IoU": iou,
        "Acc": acc,
    }


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    finite = ~np.isnan(x)
    return float(x[finite].mean()) if finite.any() else float("nan")


class SegmentationMeter:
    """Streaming dataset-level segmentation scores: sums the confusion matrix, then scores once (mmseg)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image (or a batch of images of equal size) of class indices."""
        self.confusion += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        """Scores of everything seen so far; see :func:`segmentation_scores`."""
        return segmentation_scores(self.confusion)


# ----------------------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------------------

DEPTH_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def depth_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Standard monocular depth errors of one image on its valid pixels.

    Reference: BTS ``compute_errors`` (Eigen et al. 2014 metrics), also mmseg ``DepthMetric``:
    d_k = % of pixels with max(gt/pred, pred/gt) < 1.25**k; abs_rel = mean(|p-g|/g); sq_rel = mean((p-g)²/g);
    rmse = sqrt(mean((p-g)²)); rmse_log = sqrt(mean((ln p - ln g)²)); log10 = mean(|log10 p - log10 g|);
    silog (variant A, BTS) = sqrt(mean(e²) - mean(e)²) × 100 with e = ln p - ln g.
    ``valid`` defaults to ``gt > 0``; predictions on valid pixels must be > 0 (clamp first, see DepthMeter).
    Returns NaN for every key when no pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    mask = gt > 0 if valid is None else np.asarray(valid, dtype=bool)
    p, g = pred[mask], gt[mask]
    if p.size == 0:
        return {k: float("nan") for k in DEPTH_KEYS}
    if np.any(p <= 0) or np.any(g <= 0):
        raise ValueError("depth on valid pixels must be > 0 (clamp predictions to [min_depth, max_depth])")
    ratio = np.maximum(g / p, p / g)
    diff = p - g
    e = np.log(p) - np.log(g)
    silog_var = max(float(np.mean(e**2) - np.mean(e) ** 2), 0.0)  # clip tiny negative rounding
    return {
        "d1": float(np.mean(ratio < 1.25) * 100.0),
        "d2": float(np.mean(ratio < 1.25**2) * 100.0),
        "d3": float(np.mean(ratio < 1.25**3) * 100.0),
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(e**2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": float(np.sqrt(silog_var) * 100.0),
    }


class DepthMeter:
    """Per-image depth errors averaged over images (BTS / mmseg ``DepthMetric`` / probe3d convention).

    Valid pixels: ``gt > min_depth`` (or ``gt > 0`` when None) and ``gt < max_depth`` (when given),
    intersected with the ``valid`` mask passed to :meth:`update`. With ``clamp_pred`` (default) predictions
    are clamped to [min_depth, max_depth] and inf -> max_depth, nan -> min_depth, as BTS ``eval_with_pngs``
    does (only the bounds that are set are applied). Images without any valid pixel are skipped and counted
    in ``n_skipped``.
    """

    def __init__(
        self, min_depth: float | None = None, max_depth: float | None = None, clamp_pred: bool = True
    ) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.clamp_pred = clamp_pred
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(DEPTH_KEYS, 0.0)
        self.n_images = 0
        self.n_skipped = 0

    def valid_mask(self, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The pixels this meter scores for a GT depth map (range test ∩ ``valid``)."""
        gt = np.asarray(gt)
        mask = gt > (self.min_depth if self.min_depth is not None else 0.0)
        if self.max_depth is not None:
            mask &= gt < self.max_depth
        if valid is not None:
            mask &= np.asarray(valid, dtype=bool)
        return mask

    def prepare_pred(self, pred: np.ndarray) -> np.ndarray:
        """Apply the BTS clamping (if enabled) to a prediction."""
        pred = np.array(pred, dtype=np.float64)
        if not self.clamp_pred:
            return pred
        if self.min_depth is not None:
            pred[np.isnan(pred)] = self.min_depth
            pred[pred < self.min_depth] = self.min_depth
        if self.max_depth is not None:
            pred[np.isposinf(pred)] = self.max_depth
            pred[pred > self.max_depth] = self.max_depth
        return pred

    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """Score one image and add it to the running means; returns that image's errors."""
        mask = self.valid_mask(gt, valid)
        errs = depth_errors(self.prepare_pred(pred), gt, mask)
        if not mask.any():
            self.n_skipped += 1
            return errs
        for k in DEPTH_KEYS:
            self._sums[k] += errs[k]
        self.n_images += 1
        return errs

    def compute(self) -> dict[str, float]:
        """Mean over scored images of each per-image error, plus ``n_images``."""
        n = self.n_images
        out = {k: (self._sums[k] / n if n else float("nan")) for k in DEPTH_KEYS}
        out["n_images"] = n
        return out


# ----------------------------------------------------------------------------------------------------------
# Surface normals
# ----------------------------------------------------------------------------------------------------------

NORMALS_KEYS = ("mean", "median", "rmse", "pct_11_25", "pct_22_5", "pct_30")
_NORMAL_THRESHOLDS = {"pct_11_25": 11.25, "pct_22_5": 22.5, "pct_30": 30.0}


def angular_errors_deg(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, axis: int = -1, eps: float = 1e-12
) -> np.ndarray:
    """Per-pixel angle (degrees) between predicted and GT normals, for valid pixels only (1-D float64).

    Reference: Fouhey et al. evalSN and probe3d ``evaluate_surface_norm``: both vectors L2-normalised (norms
    below ``eps`` are treated as ``eps``, so a zero vector gives 90°), cosine clamped to [-1, 1], then acos.
    Vectors lie along ``axis`` (default last, i.e. (H, W, 3)); ``valid`` has the other dimensions' shape.
    """
    pred = np.moveaxis(np.asarray(pred, dtype=np.float64), axis, -1)
    gt = np.moveaxis(np.asarray(gt, dtype=np.float64), axis, -1)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    if valid is not None:
        mask = np.asarray(valid, dtype=bool)
        pred, gt = pred[mask], gt[mask]
    else:
        pred, gt = pred.reshape(-1, pred.shape[-1]), gt.reshape(-1, gt.shape[-1])
    pn = np.maximum(np.linalg.norm(pred, axis=-1), eps)
    gn = np.maximum(np.linalg.norm(gt, axis=-1), eps)
    cos = np.clip(np.sum(pred * gt, axis=-1) / (pn * gn), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def normals_scores(errors: np.ndarray) -> dict[str, float]:
    """Mean, median, RMSE (degrees) and % of errors below 11.25° / 22.5° / 30° of a set of angular errors.

    Reference: Fouhey et al. evalSN (``rmse = sqrt(mean(E²))``, thresholds strict ``<``, as probe3d).
    NaN for every key when ``errors`` is empty.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        return {k: float("nan") for k in NORMALS_KEYS}
    out = {
        "mean": float(e.mean()),
        "median": float(np.median(e)),
        "rmse": float(np.sqrt(np.mean(e**2))),
    }
    for key, t in _NORMAL_THRESHOLDS.items():
        out[key] = float(np.mean(e < t) * 100.0)
    return out


class NormalsMeter:
    """Streaming surface-normal scores in both variants.

    * Per image, then averaged over images (probe3d ``evaluate_surface_norm(image_average=True)``, the
      headline convention): keys ``mean``, ``median``, ``rmse``, ``pct_11_25``, ``pct_22_5``, ``pct_30``.
    * Pooled over every valid pixel of the set (Fouhey et al.): the same keys suffixed ``_pooled``. Sums and
      threshold counts are exact; the pooled median comes from a histogram with ``median_bin_deg`` wide bins
      (default 0.001°, error at most half a bin) so that memory stays constant; the mid-point of the bin
      holding the middle element is returned. The per-image median is exact.

    Images without any valid pixel are skipped (counted in ``n_skipped``).
    """

    def __init__(self, median_bin_deg: float = 1e-3) -> None:
        self.median_bin_deg = median_bin_deg
        self._nbins = int(np.ceil(180.0 / median_bin_deg)) + 1
        self.reset()

    def reset(self) -> None:
        self._count = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._below = dict.fromkeys(_NORMAL_THRESHOLDS, 0)
        self._hist = np.zeros(self._nbins, dtype=np.int64)
        self._per_image_sums = dict.fromkeys(NORMALS_KEYS, 0.0)
        self.n_images = 0
        self.n_skipped = 0

    def update(
        self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, axis: int = -1
    ) -> dict[str, float]:
        """Score one image (see :func:`angular_errors_deg` for the layout); returns its per-image scores."""
        return self.update_errors(angular_errors_deg(pred, gt, valid, axis=axis))

    def update_errors(self, errors: np.ndarray) -> dict[str, float]:
        """Add one image given its angular errors (degrees) of valid pixels."""
        e = np.asarray(errors, dtype=np.float64).ravel()
        scores = normals_scores(e)
        if e.size == 0:
            self.n_skipped += 1
            return scores
        self._count += e.size
        self._sum += float(e.sum())
        self._sum_sq += float(np.sum(e**2))
        for key, t in _NORMAL_THRESHOLDS.items():
            self._below[key] += int(np.count_nonzero(e < t))
        bins = np.clip((e / self.median_bin_deg).astype(np.int64), 0, self._nbins - 1)
        self._hist += np.bincount(bins, minlength=self._nbins)
        for k in NORMALS_KEYS:
            self._per_image_sums[k] += scores[k]
        self.n_images += 1
        return scores

    def _pooled_median(self) -> float:
        n = self._count
        cum = np.cumsum(self._hist)
        # np.median of n sorted values averages elements (n-1)//2 and n//2 (0-based).
        lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))
        hi = int(np.searchsorted(cum, n // 2 + 1))
        return float((lo + hi + 1) / 2.0 * self.median_bin_deg)

    def compute(self) -> dict[str, float]:
        """Pooled and per-image-averaged scores, plus ``n_pixels`` and ``n_images``."""
        if self._count == 0:
            out = {k: float("nan") for k in NORMALS_KEYS}
            out.update({f"{k}_pooled": float("nan") for k in NORMALS_KEYS})
            out.update(n_pixels=0, n_images=0)
            return out
        n = self._count
        out = {k: self._per_image_sums[k] / self.n_images for k in NORMALS_KEYS}
        out |= {"mean_pooled": self._sum / n, "median_pooled": self._pooled_median(),
                "rmse_pooled": float(np.sqrt(self._sum_sq / n))}
        for key in _NORMAL_THRESHOLDS:
            out[f"{key}_pooled"] = self._below[key] / n * 100.0
        out["n_pixels"] = n
        out["n_images"] = self.n_images
        return out


# ----------------------------------------------------------------------------------------------------------
# Classification and retrieval
# ----------------------------------------------------------------------------------------------------------


def _rank_of(scores: np.ndarray, target: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """0-based rank of column ``target[i]`` in row i of ``scores`` under a stable descending sort.

    rank = #(scores > s_target) + #(scores == s_target at a lower index): ties go to the lower index.
    Processed ``chunk`` rows at a time so the boolean temporaries stay small.
    """
    n_rows, n_cols = scores.shape
    ranks = np.empty(n_rows, dtype=np.int64)
    cols = np.arange(n_cols)[None, :]
    for start in range(0, n_rows, chunk):
        sl = slice(start, min(start + chunk, n_rows))
        block, tgt = scores[sl], target[sl]
        s = block[np.arange(block.shape[0]), tgt][:, None]
        higher = np.count_nonzero(block > s, axis=1)
        tied_before = np.count_nonzero((block == s) & (cols < tgt[:, None]), axis=1)
        ranks[sl] = higher + tied_before
    return ranks


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def top_k_accuracy(
    logits_or_scores: np.ndarray, labels: np.ndarray, k: int | Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy in percent, keys ``"top1"``, ``"top5"``, ...

    Reference: standard ImageNet top-k (DINOv2 kNN / linear evals, CLIP_benchmark zero-shot). A sample
    counts for k when its true class ranks < k; ties are broken by class index (lower first). k larger than
    the number of classes always counts.
    """
    scores = _as_float(logits_or_scores)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be (N, C) with N = len(labels), got {scores.shape} and {labels.shape}")
    ks = (k,) if isinstance(k, int) else tuple(k)
    if labels.size == 0:
        return {f"top{kk}": float("nan") for kk in ks}
    rank = _rank_of(scores, labels)
    return {f"top{kk}": float(np.mean(rank < kk) * 100.0) for kk in ks}


def retrieval_recall(
    similarity: np.ndarray, image_of_text: np.ndarray, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, float]:
    """Image-text retrieval recall@k in percent, keys ``t2i_R@k`` and ``i2t_R@k``.

    ``similarity`` is (n_texts, n_images) (e.g. normalised text · image embeddings); ``image_of_text[t]`` is
    the index of caption t's image (several captions per image allowed).
    Reference: CLIP_benchmark ``zeroshot_retrieval`` / BLIP ``itm_eval``: text→image counts a text when its
    image is among its top-k images; image→text counts an image when any of its captions is among its top-k
    texts (i.e. the best-ranked caption has rank < k). Each image must have at least one caption.
    Ties: lower index first (stable descending sort), so an image/caption tied with the GT but with a lower
    index ranks ahead of it.
    """
    sim = _as_float(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (n_texts, n_images), got {sim.shape}")
    img = np.asarray(image_of_text, dtype=np.int64).ravel()
    n_texts, n_images = sim.shape
    if img.shape[0] != n_texts:
        raise ValueError(f"image_of_text has {img.shape[0]} entries for {n_texts} texts")
    if img.size and (img.min() < 0 or img.max() >= n_images):
        raise ValueError("image_of_text holds an image index out of range")
    has_caption = np.bincount(img, minlength=n_images) > 0
    if not has_caption.all():
        raise ValueError(f"{int((~has_caption).sum())} images have no caption")
    ks = tuple(ks)

    t2i_rank = _rank_of(sim, img)

    # image -> text: the image's best caption = highest score, lowest text index among ties.
    text_ids = np.arange(n_texts)
    own_score = sim[text_ids, img]
    order = np.lexsort((text_ids, -own_score, img))  # by image, then score descending, then text index
    best_text = order[np.searchsorted(img[order], np.arange(n_images))]
    i2t_rank = _rank_of(np.ascontiguousarray(sim.T), best_text)

    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_R@{k}"] = float(np.mean(t2i_rank < k) * 100.0)
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(i2t_rank < k) * 100.0)
    return out


# ----------------------------------------------------------------------------------------------------------
# Correspondence
# ----------------------------------------------------------------------------------------------------------


def _point_errors(
    pred_points: np.ndarray, gt_points: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_points, dtype=np.float64)
    gt = np.asarray(gt_points, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) of equal shape, got {pred.shape} and {gt.shape}")
    err = np.linalg.norm(pred - gt, axis=-1)
    if valid is None:
        return err, np.ones(err.shape, dtype=bool)
    mask = np.broadcast_to(np.asarray(valid, dtype=bool), err.shape)
    return err, mask


def correspondence_recall(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    valid: np.ndarray | None,
    thresholds: Iterable[float],
) -> dict[str, float]:
    """% of valid points whose L2 error (pixels) is strictly below each threshold; keys ``recall@{t:g}px``.

    Reference: probe3d 2D correspondence recall (NAVI 5/25/50 px, ScanNet 5/10/20 px). Points are (..., 2);
    ``valid`` (shape without the last dim, None = all) selects the scored points; pooled over all of them.
    NaN when no point is valid.
    """
    err, mask = _point_errors(pred_points, gt_points, valid)
    e = err[mask]
    out = {}
    for t in thresholds:
        out[f"recall@{t:g}px"] = float(np.mean(e < t) * 100.0) if e.size else float("nan")
    return out


def pck(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    valid: np.ndarray | None,
    bbox: np.ndarray,
    alpha: float = 0.1,
) -> float:
    """PCK@alpha in percent: a point is correct when its L2 error <= alpha · max(bbox width, bbox height).

    Reference: SPair-71k devkit convention (threshold from the target bbox, in target-image pixels).
    Points are (N, 2) with ``bbox`` (4,) = (x0, y0, x1, y1), or batched (P, N, 2) with ``bbox`` (P, 4); the
    result is pooled over all valid points (average per pair by calling once per pair). NaN when none is
    valid.
    """
    err, mask = _point_errors(pred_points, gt_points, valid)
    box = np.asarray(bbox, dtype=np.float64)
    if box.shape[-1] != 4 or box.shape[:-1] != err.shape[:-1]:
        raise ValueError(f"bbox must be (..., 4) matching the points' leading dims, got {box.shape}")
    thr = alpha * np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])
    correct = err <= thr[..., None]  # SPair evaluator: correct at distance <= threshold
    n = int(mask.sum())
    return float(np.count_nonzero(correct & mask) / n * 100.0) if n else float("nan")
