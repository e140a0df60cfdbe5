"""Independent re-implementations of the reference protocols' steps, for the cross-check tests.

Each function is written here from the documented behaviour of the reference it names (formulas, sizes,
order of operations), not copied from it, and deliberately structured differently from tips-bench's own
code (per-axis window starts instead of a grid loop, explicit padding arithmetic, float64 metrics), so that
an error shared by both is unlikely. The references:

* sliding-window inference: mmsegmentation 1.x ``EncoderDecoder.slide_inference``
  (mmseg/models/segmentors/encoder_decoder.py), DINOv3 ``slide_inference``
  (dinov3/eval/segmentation/inference.py), TIPS ``predict_slide`` (pytorch/TIPS_zeroshot_segmentation.ipynb);
* resizing: mmcv ``rescale_size`` (mmcv/image/geometric.py), DINOv3 ``FixedSideResize``
  (dinov3/eval/segmentation/transforms.py), TIPS notebook ``ShortSideResize``;
* patch fit: DINOv2 ``CenterPadding`` (dinov2/hub/utils.py), probe3d ``center_padding``
  (evals/models/utils.py), TIPS notebook ``encode_image_value_attention`` (bicubic resize up);
* metrics: probe3d ``evaluate_depth`` and ``evaluate_surface_norm`` (evals/utils/metrics.py), SPair-71k PCK
  (Min et al. 2019; the authors' evaluator, juhongm999/dhpf common/evaluation.py ``classify_prd``),
  DINOv2 kNN (dinov2/eval/knn.py ``KnnModule``) and ``SigLoss`` (dinov2/eval/depth/models/losses/sigloss.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

WindowFn = Callable[[torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------------------------------------
# Sliding windows
# ----------------------------------------------------------------------------------------------------------


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis of length ``size``: a ceil-division grid at ``stride``, the last window
    moved back so that it ends on the border, a window longer than the axis starting at 0."""
    count = 1 + math.ceil(max(size - crop, 0) / stride)
    return [max(0, min(i * stride, size - crop)) for i in range(count)]


def slide_merge(image: torch.Tensor, window_fn: WindowFn, crop: int, stride: int, flavour: str = "mmseg"
                ) -> torch.Tensor:
    """Sliding-window inference over ``image`` (C, H, W) -> merged map (K, H, W) at the image's size.

    ``window_fn`` maps a window (C, h, w) to a low-resolution output (K, gh, gw); it is resized bilinearly
    (``align_corners=False``) to the window and accumulated, then divided by the number of windows covering
    each pixel. Flavours:

    * ``mmseg``: logits averaged (mmseg ``slide_inference``);
    * ``dinov3``: as mmseg, except that when the window exceeds the image on *both* sides the window becomes
      a square of the image's shorter side (DINOv3's "< 1.0 TTA" branch);
    * ``tips``: a softmax over channels of each resized window output, then averaged (TIPS ``predict_slide``).
    """
    if flavour not in ("mmseg", "dinov3", "tips"):
        raise ValueError(f"unknown flavour {flavour}")
    _, height, width = image.shape
    crop_h = crop_w = crop
    if flavour == "dinov3" and crop > height and crop > width:
        crop_h = crop_w = min(height, width)
    total: torch.Tensor | None = None
    hits = torch.zeros(height, width, dtype=torch.int64)
    for top in window_starts(height, crop_h, stride):
        for left in window_starts(width, crop_w, stride):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            low = window_fn(image[:, top:bottom, left:right])
            out = F.interpolate(low[None], size=(bottom - top, right - left), mode="bilinear",
                                align_corners=False)[0]
            if flavour == "tips":
                out = torch.softmax(out, dim=0)
            if total is None:
                total = torch.zeros(out.shape[0], height, width, dtype=out.dtype)
            total[:, top:bottom, left:right] = total[:, top:bottom, left:right] + out
            hits[top:bottom, left:right] += 1
    assert total is not None and bool((hits > 0).all())
    return total / hits.to(total.dtype)


# ----------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------


def mmcv_rescale_hw(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size`` with a (long, short) bound pair: one factor, the largest that keeps the long side
    within max(scale) and the short side within min(scale); each side scaled and rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def dinov3_fixed_side_hw(height: int, width: int, small: int) -> tuple[int, int]:
    """DINOv3 ``FixedSideResize``: the short side becomes ``small``, the other scaled and rounded half up
    (a square counts as 'width >= height')."""
    if height > width:
        return int(small * height / width + 0.5), small
    return small, int(small * width / height + 0.5)


def tips_short_side_hw(height: int, width: int, size: int) -> tuple[int, int]:
    """TIPS notebook ``ShortSideResize``: the short side becomes ``size``, the other truncated (int())."""
    if min(height, width) == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


# ----------------------------------------------------------------------------------------------------------
# Patch fit
# ----------------------------------------------------------------------------------------------------------


def dinov2_center_padding(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """DINOv2 ``CenterPadding``: each spatial side zero-padded up to the next multiple, floor(pad/2) before."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        extra = -size % multiple
        pads += [extra // 2, extra - extra // 2]
    return F.pad(x, pads)


def probe3d_center_padding(x: torch.Tensor, patch: int) -> torch.Tensor:
    """probe3d ``center_padding``: returned as is when both sides are patch multiples; otherwise each side
    gets ``patch - size % patch`` zeros, floor half before, which is a whole extra patch on a side that
    already was a multiple (the reference's own arithmetic, kept)."""
    h, w = x.shape[-2:]
    if h % patch == 0 and w % patch == 0:
        return x
    extra_h, extra_w = patch - h % patch, patch - w % patch
    return F.pad(x, (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2))


def tips_resize_up(x: torch.Tensor, patch: int) -> torch.Tensor:
    """TIPS notebook: pixels resized (bicubic, ``align_corners=False``) to the next patch multiples."""
    h, w = x.shape[-2:]
    size = (-(-h // patch) * patch, -(-w // patch) * patch)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------

NYU_CROP = (slice(45, 471), slice(41, 601))  # Eigen crop of a 480x640 map, as probe3d's nyu_crop applies it


def probe3d_depth(pred: torch.Tensor, gt: torch.Tensor, nyu_crop: bool = False) -> dict[str, float]:
    """probe3d ``evaluate_depth(image_average=True)``: per image over pixels with gt > 0, RMSE and the
    fractions of max(gt/pred, pred/gt) below 1.25^k, then the mean over images. (B, H, W) inputs.

    As in the reference, sums are divided by the number of valid pixels floored at 1, so an image without
    any valid pixel scores 0 on every key and still counts in the mean.
    """
    pred, gt = pred.double(), gt.double()
    if nyu_crop:
        assert pred.shape[-2:] == (480, 640)
        pred, gt = pred[(..., *NYU_CROP)], gt[(..., *NYU_CROP)]
    per_image: dict[str, list[float]] = {"rmse": [], "d1": [], "d2": [], "d3": []}
    for p, g in zip(pred, gt, strict=True):
        keep = g > 0
        pv, gv = p[keep], g[keep]
        count = max(int(keep.sum()), 1)
        per_image["rmse"].append(math.sqrt(float(((gv - pv) ** 2).sum()) / count))
        ratio = torch.maximum(gv / pv, pv / gv)
        for k in (1, 2, 3):
            per_image[f"d{k}"].append(float((ratio < 1.25**k).sum()) / count)
    return {key: float(np.mean(vals)) for key, vals in per_image.items()}


def probe3d_normals(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """probe3d ``evaluate_surface_norm(image_average=True)``: angle = acos of the cosine similarity (clamped to
    [-1, 1]) in degrees; per image over valid pixels the RMSE of the angle and the fractions below 11.25°,
    22.5° and 30°, then the mean over images (an image without valid pixels scores 0 and counts, as in
    :func:`probe3d_depth`). pred, gt (B, 3, H, W); valid (B, 1, H, W)."""
    cos = F.cosine_similarity(pred.double(), gt.double(), dim=1).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    per_image: dict[str, list[float]] = {"rmse": [], "d1": [], "d2": [], "d3": []}
    for a, m in zip(angle, valid[:, 0].bool(), strict=True):
        e = a[m]
        count = max(int(m.sum()), 1)
        per_image["rmse"].append(math.sqrt(float((e**2).sum()) / count))
        for key, limit in (("d1", 11.25), ("d2", 22.5), ("d3", 30.0)):
            per_image[key].append(float((e < limit).sum()) / count)
    return {key: float(np.mean(vals)) for key, vals in per_image.items()}


def spair_pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, trg_bbox: np.ndarray, alpha: float = 0.1
              ) -> float:
    """SPair-71k PCK@alpha in percent, pooled over the visible keypoints of all pairs.

    A transferred keypoint is correct when it lies *within* alpha * max(bbox width, bbox height) of the target
    keypoint (distance <= threshold, as the authors' evaluator compares), the box being the target's
    annotated (x1, y1, x2, y2) box and everything in the target image's original pixels.
    pred, gt (P, N, 2) as (x, y); visible (P, N); trg_bbox (P, 4).
    """
    box = np.asarray(trg_bbox, dtype=np.float64)
    threshold = alpha * np.max(np.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]]), axis=0)
    dist = np.sqrt(((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2).sum(-1))
    correct = dist <= threshold[:, None]
    vis = np.asarray(visible, dtype=bool)
    return float(correct[vis].sum() / vis.sum() * 100.0)


def dinov2_knn(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, num_classes: int,
               ks: Sequence[int], temperature: float = 0.07) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """DINOv2 ``KnnModule``: features L2-normalised, cosine similarity to every train feature, the top max(ks)
    neighbours, weights softmax(sim / T) over those, class scores = the weights of the first k neighbours summed
    per class; the prediction is the best-scoring class. Returns (predictions, class scores) per k."""
    train = train / train.norm(dim=1, keepdim=True)
    test = test / test.norm(dim=1, keepdim=True)
    sims = test @ train.T
    top_sims, top_idx = sims.topk(max(ks), dim=1, largest=True, sorted=True)
    weights = torch.softmax(top_sims / temperature, dim=1)
    onehot = F.one_hot(train_labels[top_idx], num_classes).to(weights.dtype)  # (n, K, C)
    preds, scores = {}, {}
    for k in ks:
        s = (onehot[:, :k] * weights[:, :k, None]).sum(dim=1)
        scores[k] = s.numpy()
        preds[k] = s.argmax(dim=1).numpy()
    return preds, scores


def dinov2_sigloss(pred: torch.Tensor, gt: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """DINOv2 ``SigLoss`` (valid_mask on, no warm-up): over pixels with 0 < gt (<= max_depth when given),
    g = log(pred + 1e-3) - log(gt + 1e-3); loss = sqrt(unbiased var(g) + 0.15 * mean(g)^2)."""
    keep = gt > 0
    if max_depth is not None:
        keep = keep & (gt <= max_depth)
    g = torch.log(pred[keep] + 1e-3) - torch.log(gt[keep] + 1e-3)
    n = g.numel()
    mean = g.sum() / n
    var = ((g - mean) ** 2).sum() / (n - 1)
    return torch.sqrt(var + 0.15 * mean**2)
