"""The student's views for self-distillation: iBOT patch masks and DINO local crops (seeded)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tips_bench.pretrain.config import PretrainConfig


def random_masks(batch: int, grid: int, config: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    """iBOT-style masks (B, grid, grid): a share of the images get a random ratio of their patches masked."""
    n = grid * grid
    masked_image = torch.rand(batch, generator=generator) < config.mask_probability
    lo, hi = config.mask_ratio
    counts = (torch.round((lo + (hi - lo) * torch.rand(batch, generator=generator)) * n)).long()
    ranks = torch.rand(batch, n, generator=generator).argsort(1).argsort(1)
    mask = (ranks < counts[:, None]) & masked_image[:, None]
    return mask.view(batch, grid, grid)


def local_crops(images: torch.Tensor, config: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    """``local_crops`` random-resized crops per image, (crops x B, 3, s, s), crop-major order."""
    b, _, h, w = images.shape
    k, size = config.local_crops, config.local_size
    lo, hi = config.local_scale
    area = (lo + (hi - lo) * torch.rand(k, b, generator=generator)) * h * w
    ratio = torch.exp((torch.rand(k, b, generator=generator) * 2 - 1) * math.log(4 / 3))
    ch = (area / ratio).sqrt().round().clamp(1, h).long()
    cw = (area * ratio).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(k, b, generator=generator) * (h - ch + 1)).long()
    x0 = (torch.rand(k, b, generator=generator) * (w - cw + 1)).long()
    out = []
    for j in range(k):
        for i in range(b):
            crop = images[i : i + 1, :, y0[j, i] : y0[j, i] + ch[j, i], x0[j, i] : x0[j, i] + cw[j, i]]
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)
