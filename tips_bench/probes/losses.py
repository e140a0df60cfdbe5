"""Training losses for dense probes: cross entropy, scale-invariant log depth loss, angular normal losses.

References: Eigen et al. (NeurIPS 2014) scale-invariant log loss as used by BTS (``silog_loss``, ×10, λ = 0.85),
DINOv2's ``SigLoss`` and probe3d's ``sig_loss``; MegaDepth's multi-scale gradient-matching term (Li & Snavely,
CVPR 2018) as used by DINOv2's ``GradientLoss`` and probe3d's ``DepthLoss`` (SigLoss ×10 + gradient ×0.5);
Bae et al. (ICCV 2021) angular vMF-style NLL as used by probe3d's ``angular_loss(uncertainty_aware=True)``.

Every loss averages over the valid pixels of the *whole batch* (pooled, as BTS, DINOv2 and probe3d do) and
returns an exact 0 connected to the graph when there is no valid pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tips_bench.probes.vectors import cosine

__all__ = [
    "angular_loss",
    "dinov2_sigloss",
    "gradient_loss",
    "probe3d_depth_loss",
    "segmentation_loss",
    "silog_loss",
    "uncertainty_angular_loss",
]

#: Cosine clamp used before acos (probe3d uses 1e-4; 1e-6 keeps acos' gradient finite in float32 too).
COS_EPS = 1e-6


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def _pixel_mask(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) bool mask from ``valid`` of shape (B, H, W) or (B, 1, H, W) (None = all pixels)."""
    shape = (like.shape[0], *like.shape[2:])
    if valid is None:
        return torch.ones(shape, dtype=torch.bool, device=like.device)
    if valid.ndim == 4 and valid.shape[1] == 1:
        valid = valid[:, 0]
    if tuple(valid.shape) != shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}; expected {shape} or (B, 1, H, W)")
    return valid.bool()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Pixel-wise cross entropy (mean over non-ignored pixels); logits (B, C, H, W), target (B, H, W) ints."""
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    target = target.long()
    if not (target != ignore_index).any():
        return _zero(logits)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def _log_diff(pred: torch.Tensor, gt: torch.Tensor, eps: float) -> torch.Tensor:
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ")
    return torch.log(pred.clamp_min(eps)) - torch.log(gt.clamp_min(eps))


def _depth_mask(valid: torch.Tensor | None, gt: torch.Tensor) -> torch.Tensor:
    """``valid ∧ gt > 0``; ``valid`` may drop gt's singleton channel ((B, H, W) for a (B, 1, H, W) gt)."""
    if valid is None:
        return gt > 0
    if valid.shape != gt.shape:
        if gt.ndim == 4 and gt.shape[1] == 1 and tuple(valid.shape) == (gt.shape[0], *gt.shape[2:]):
            valid = valid.unsqueeze(1)
        else:
            raise ValueError(f"valid {tuple(valid.shape)} and gt {tuple(gt.shape)} differ")
    return valid.bool() & (gt > 0)


def gradient_loss(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None, scales: int = 4, eps: float = 1e-3
) -> torch.Tensor:
    """MegaDepth multi-scale gradient matching on R = log pred − log gt, maps (B, [1,] H, W).

    At each scale s = 0..scales−1 the maps are subsampled by 2^s and the term is
    Σ(|R[y, x] − R[y, x+2]| + |R[y, x] − R[y+2, x]|) / N over pairs of valid pixels (N = valid pixels at that
    scale); the neighbours two apart follow the MegaDepth/DINOv2/probe3d code. Those codes subsample by
    2·s for s = 1..3 (strides 1, 2, 4, 6); we halve at each scale (strides 1, 2, 4, 8), MegaDepth's stated
    pyramid. Log terms clamp depths at ``eps`` (1 mm), see :func:`silog_loss`.
    """
    mask = _depth_mask(valid, gt)
    diff = torch.where(mask, _log_diff(pred, gt, eps), torch.zeros_like(pred))
    total = _zero(pred)
    for s in range(scales):
        step = 2**s
        d, m = diff[..., ::step, ::step], mask[..., ::step, ::step].to(diff.dtype)
        n = m.sum()
        if n == 0:
            continue
        gx = (d[..., :, :-2] - d[..., :, 2:]).abs() * m[..., :, :-2] * m[..., :, 2:]
        gy = (d[..., :-2, :] - d[..., 2:, :]).abs() * m[..., :-2, :] * m[..., 2:, :]
        total = total + (gx.sum() + gy.sum()) / n
    return total


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 0.85,
    scale: float = 10.0,
    grad_weight: float = 0.0,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Scale-invariant log loss ``scale · sqrt(mean(d²) − lam · mean(d)²)``, d = log pred − log gt.

    Constants: lam = 0.85 ("variance focus") and scale = 10 as BTS; DINOv2's SigLoss computes
    var(d) + 0.15·mean(d)², the same quantity; probe3d multiplies its sig_loss by 10. lam = 1 makes the
    loss fully scale invariant (0 for pred = c·gt). Means pool over valid pixels of the whole batch
    (valid = ``valid`` ∧ gt > 0). Depths are clamped at ``eps`` = 1 mm before the log (probe3d adds 1e-3
    instead; clamping keeps pred = c·gt exact). The radicand is evaluated as var(d) + (1 − lam)·mean(d)²,
    which is non-negative for lam ≤ 1, and floored at 1e-12 so the sqrt's gradient stays finite.
    ``grad_weight`` > 0 adds that multiple of :func:`gradient_loss`.
    """
    mask = _depth_mask(valid, gt)
    if not mask.any():
        return _zero(pred)
    d = _log_diff(pred, gt, eps)[mask]
    mean = d.mean()
    radicand = (d - mean).square().mean() + (1.0 - lam) * mean.square()
    loss = scale * torch.sqrt(radicand.clamp_min(1e-12))
    if grad_weight:
        loss = loss + grad_weight * gradient_loss(pred, gt, mask, eps=eps)
    return loss


def dinov2_sigloss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
                   max_depth: float | None = None) -> torch.Tensor:
    """DINOv2's ``SigLoss`` (dinov2/eval/depth/models/losses/sigloss.py) as its code computes it.

    g = log(pred + 1e-3) − log(gt + 1e-3) over pixels with gt > 0 (and gt <= ``max_depth`` when given, and
    ``valid``); loss = sqrt(var(g) + 0.15 · mean(g)²) with the unbiased variance (``torch.var``), no ×10.
    """
    mask = _depth_mask(valid, gt)
    if max_depth is not None:
        mask = mask & (gt <= max_depth)
    if int(mask.sum()) < 2:
        return _zero(pred)
    g = torch.log(pred[mask] + 1e-3) - torch.log(gt[mask] + 1e-3)
    return torch.sqrt(torch.var(g) + 0.15 * g.mean().square())


def probe3d_depth_loss(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None, max_depth: float | None = None
) -> torch.Tensor:
    """probe3d ``DepthLoss``: 10 · SigLoss(λ = 0.85) + 0.5 · gradient loss; GT above ``max_depth`` is ignored."""
    mask = _depth_mask(valid, gt)
    if max_depth is not None:
        mask = mask & (gt <= max_depth)
    return silog_loss(pred, gt, mask, lam=0.85, scale=10.0, grad_weight=0.5)


def _angles(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (B, 3, H, W)")
    cos = cosine(pred, gt, dim=1)
    return cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS).acos()


def angular_loss(pred_normals: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean angle (radians) between predicted and GT normals (B, 3, H, W) over valid pixels.

    acos of the cosine similarity clamped to [−1 + 1e−6, 1 − 1e−6] (probe3d ``angular_loss``).
    """
    mask = _pixel_mask(valid, pred_normals)
    if not mask.any():
        return _zero(pred_normals)
    return _angles(pred_normals, gt)[mask].mean()


def uncertainty_angular_loss(
    pred: torch.Tensor, kappa: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Bae et al. (2021) uncertainty-aware angular loss, as in probe3d: mean of ``kappa_reg + κ·θ``.

    θ = acos(clamped cosine) as in :func:`angular_loss`; κ (B, 1, H, W) or (B, H, W) is the concentration
    from :func:`~tips_bench.probes.heads.to_normals` (elu + 1.01). kappa_reg = log(1 + exp(−κπ)) − log(1 + κ²)
    is the log-normaliser of Bae et al.'s angular vMF density, so the whole term is its negative
    log-likelihood up to a constant; log(1 + exp(−κπ)) is computed as softplus(−κπ).
    """
    mask = _pixel_mask(valid, pred)
    if kappa.ndim == 4:
        if kappa.shape[1] != 1:
            raise ValueError(f"kappa must be (B, 1, H, W) or (B, H, W), got {tuple(kappa.shape)}")
        kappa = kappa[:, 0]
    if not mask.any():
        return _zero(pred) + _zero(kappa)
    theta = _angles(pred, gt)
    kappa_reg = F.softplus(-math.pi * kappa) - torch.log1p(kappa.square())
    return (kappa_reg + kappa * theta)[mask].mean()
