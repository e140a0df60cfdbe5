"""Unit vectors and cosines along one dimension of a tensor.

Written by hand because ``F.normalize`` and ``F.cosine_similarity`` over a short, non-innermost dimension
(normals: ``(B, 3, H, W)`` along dim 1) are ~100x slower than these element-wise forms with the pinned
torch on CPU (80 ms vs 0.9 ms for 8 x 3 x 224 x 224), which made the normals probes' training loop
dominate the default run. Same values and eps semantics as the torch functions.
"""

from __future__ import annotations

import torch


def unit(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim`` (``F.normalize``); the gradient is zero where the norm is clamped."""
    return x / (x * x).sum(dim, keepdim=True).clamp_min(eps * eps).sqrt()


def cosine(a: torch.Tensor, b: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity along ``dim`` with each norm clamped at ``eps`` (``F.cosine_similarity``)."""
    na = (a * a).sum(dim).clamp_min(eps * eps).sqrt()
    nb = (b * b).sum(dim).clamp_min(eps * eps).sqrt()
    return (a * b).sum(dim) / (na * nb)
