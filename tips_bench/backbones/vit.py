"""A timm ViT as a :class:`Backbone`: forward with layer taps, original pos-embed resampling.

timm's dynamic-size ViT resamples position embeddings with bicubic + antialias. The original
code of two families does otherwise, and the difference is far above float noise (4-10e-2 on
TIPS patch tokens, 0.1-0.4 on DINOv2), so the position-embedding step is replaced per family:

* ``bilinear_antialias`` (TIPS, ``pytorch/image_encoder.py``): bilinear, antialias on, to the
  target grid size.
* ``dinov2_offset`` (DINOv2 without registers, hub code): bicubic without antialias, driven by
  ``scale_factor = (grid + 0.1) / M`` rather than by the target size.
* ``timm_bicubic_antialias`` (DINOv2 with registers, CLIP, SigLIP): timm's own behaviour.

The forward loop is written out here (rather than ``forward_intermediates``) because the TIPS
zero-shot segmentation features need the tokens entering the last block.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from tips_bench.backbones.base import Backbone, Features
from tips_bench.backbones.spec import BackboneSpec

GlobalFn = Callable[[VisionTransformer, torch.Tensor], dict[str, torch.Tensor]]


def _resample_bilinear_antialias(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(grid, size=size, mode="bilinear", antialias=True, align_corners=False)


def _resample_dinov2_offset(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    rows, cols = grid.shape[-2:]
    scale = ((size[0] + 0.1) / rows, (size[1] + 0.1) / cols)
    out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    assert tuple(out.shape[-2:]) == tuple(size), (out.shape, size)
    return out


RESAMPLERS = {"bilinear_antialias": _resample_bilinear_antialias, "dinov2_offset": _resample_dinov2_offset}


def _make_pos_embed(resample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]):
    """A replacement for ``VisionTransformer._pos_embed`` using ``resample`` for the patch grid."""

    def _pos_embed(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
        batch, rows, cols, dim = x.shape  # dynamic_img_size: patch embed yields NHWC
        n_pos_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        prefix_pos, patch_pos = self.pos_embed[:, :n_pos_prefix], self.pos_embed[:, n_pos_prefix:]
        old = self.patch_embed.grid_size
        if (rows, cols) != tuple(old):
            grid = patch_pos.reshape(1, old[0], old[1], dim).permute(0, 3, 1, 2).float()
            patch_pos = resample(grid, (rows, cols)).permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
            patch_pos = patch_pos.to(x.dtype)
        x = x.reshape(batch, rows * cols, dim)
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(batch, -1, -1))
        if self.no_embed_class:
            return torch.cat([*prefix, x + patch_pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + torch.cat([prefix_pos, patch_pos], dim=1)

    return _pos_embed


def use_pos_embed_interpolation(model: VisionTransformer, style: str) -> None:
    """Make a dynamic-size timm ViT resample its position embeddings as the original code does."""
    if style in ("timm_bicubic_antialias", "none"):
        return
    if style not in RESAMPLERS:
        raise ValueError(f"unknown pos_embed_interpolation '{style}'; expected one of {sorted(RESAMPLERS)}")
    model._pos_embed = types.MethodType(_make_pos_embed(RESAMPLERS[style]), model)


def values_trick_block(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ViT block with attention replaced by its value path (MaskCLIP / TIPS zero-shot seg).

    ``x + ls1(proj(v(norm1(x)))) `` then ``+ ls2(mlp(norm2(.)))``: each token attends only to itself.
    """
    attn = block.attn
    dim = attn.qkv.out_features // 3
    bias = None if attn.qkv.bias is None else attn.qkv.bias[2 * dim :]
    v = F.linear(block.norm1(x), attn.qkv.weight[2 * dim :], bias)
    v = attn.proj(attn.norm(v))
    x = x + block.ls1(v)
    return x + block.ls2(block.mlp(block.norm2(x)))


class TimmViTBackbone(Backbone):
    """Any timm ``VisionTransformer`` whose globals are computed by ``global_fn``."""

    def __init__(
        self,
        spec: BackboneSpec,
        model: VisionTransformer,
        global_fn: GlobalFn,
        device: str | torch.device = "cpu",
        global_names: tuple[str, ...] | None = None,
    ):
        super().__init__(spec, device)
        use_pos_embed_interpolation(model, spec.pos_embed_interpolation)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.global_fn = global_fn
        self.embed_dim = model.embed_dim
        self.num_layers = len(model.blocks)
        self.num_prefix_tokens = model.num_prefix_tokens
        self._global_names = global_names or (spec.default_global,)

    @property
    def global_names(self) -> tuple[str, ...]:
        return self._global_names

    def compile(self) -> None:
        """Compile each transformer block with ``torch.compile`` (first call pays the compile time)."""
        for i, block in enumerate(self.model.blocks):
            self.model.blocks[i] = torch.compile(block, dynamic=False)

    def _tokens_to_map(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        patches = tokens[:, self.num_prefix_tokens :]
        return patches.reshape(patches.shape[0], rows, cols, -1).permute(0, 3, 1, 2).contiguous()

    def to_text_space(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map normed tokens (B, N, D) into the text embedding space (identity for TIPS)."""
        return tokens

    def _encode(self, x: torch.Tensor, layers: list[int], text_dense: bool, norm: bool = True, **kw) -> Features:
        m = self.model
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        taps: dict[int, torch.Tensor] = {}
        layer_cls: dict[int, torch.Tensor] = {}
        last = self.num_layers - 1
        before_last = tokens
        for i, block in enumerate(m.blocks):
            if i == last:
                before_last = tokens
            tokens = block(tokens)
            if i in layers:
                tapped = m.norm(tokens) if norm else tokens
                taps[i] = self._tokens_to_map(tapped, rows, cols)
                layer_cls[i] = tapped[:, 0]
        final = m.norm(tokens)
        feats = Features(globals=self.global_fn(m, final), patches=taps, layer_cls=layer_cls)
        if text_dense:
            # One protocol for every text-capable family: the values trick of the TIPS zero-shot
            # segmentation notebook on the last block, the final norm, then the family's projection.
            dense = m.norm(values_trick_block(m.blocks[last], before_last))
            feats.text_dense = self._tokens_to_map(self.to_text_space(dense), rows, cols)
        return feats
