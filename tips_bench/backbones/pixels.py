"""The ``pixels`` baseline: each patch's normalised pixels are its feature (no weights)."""

from __future__ import annotations

import torch

from tips_bench.backbones.base import Backbone, Features
from tips_bench.backbones.families import register_family
from tips_bench.backbones.spec import BackboneSpec


class PixelsBackbone(Backbone):
    """Patch pixels (3·p·p values) as dense features; their mean over patches as the global."""

    def __init__(self, spec: BackboneSpec, device: str | torch.device = "cpu"):
        super().__init__(spec, device)
        self.embed_dim = 3 * spec.patch_size**2
        self.num_layers = 1

    def _encode(self, x: torch.Tensor, layers: list[int], text_dense: bool, norm: bool = True, **kw) -> Features:
        p = self.patch_size
        b, c, h, w = x.shape
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c * p * p, h // p, w // p)
        mean = patches.mean(dim=(2, 3))
        return Features(globals={"mean": mean}, patches={0: patches}, layer_cls={0: mean})


@register_family("pixels")
def load_pixels(spec: BackboneSpec, files: None, device: str) -> PixelsBackbone:
    """The pixels baseline reads no weights (``files`` is always None)."""
    return PixelsBackbone(spec, device)
