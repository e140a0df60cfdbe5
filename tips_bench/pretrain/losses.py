"""Pretraining losses: contrastive (CLIP/TIPS), DINO and iBOT self-distillation, captioning.

Formulas follow CLIP (Radford et al., 2021: symmetric InfoNCE over L2-normalised embeddings with
a learned temperature), DINO (Caron et al., 2021: cross-entropy between a centred, sharpened
teacher distribution and the student's) and iBOT (Zhou et al., 2022: the same on the patch tokens
the student saw masked). TIPS (Maninis et al., 2025) combines them with two CLS tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of ``image`` and ``text`` (both (B, D))."""
    scale = log_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def teacher_targets(logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's centred, sharpened distribution (no gradient)."""
    return F.softmax((logits - center) / temperature, dim=-1).detach()


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row cross-entropy ``-sum(p_teacher * log p_student)``; returns (..., ) without reduction."""
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1)


def masked_patch_loss(student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """iBOT: distillation on masked patches, averaged per image, then over images with a mask.

    ``student_logits`` and ``targets`` are (B, N, K), ``mask`` (B, N) bool.
    """
    per_patch = distillation_loss(student_logits, targets, temperature) * mask
    counts = mask.sum(-1)
    has_mask = counts > 0
    if not bool(has_mask.any()):
        return student_logits.sum() * 0.0
    return (per_patch.sum(-1)[has_mask] / counts[has_mask]).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> None:
    """EMA of the teacher's mean logits over every leading dimension (DINO centring)."""
    mean = teacher_logits.reshape(-1, teacher_logits.shape[-1]).mean(0, keepdim=True)
    center.mul_(momentum).add_(mean, alpha=1 - momentum)


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over each caption's tokens plus its end (the first pad position)."""
    positions = torch.arange(targets.shape[1], device=targets.device)
    keep = positions[None, :] <= lengths[:, None]
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (per_token * keep).sum() / keep.sum()
