"""The trainable parts: TIPS-architecture image and text towers, projection heads, caption decoder.

The image tower is the same timm ViT the ``tips`` loader builds (DINOv2 layout, second CLS as one
register, LayerScale), plus the ``mask_token`` of the official layout that masked image modeling
fills in. The text tower is :class:`~tips_bench.backbones.tips_text.TipsTextEncoder` itself, so
what is trained is exactly what is loaded for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tips_bench.backbones.tips import build_tips_vit
from tips_bench.backbones.tips_text import TipsTextEncoder
from tips_bench.backbones.vit import use_pos_embed_interpolation


@dataclass(frozen=True)
class TowerSizes:
    """Architecture of the mini towers (recorded in ``recipe.json``)."""

    image_size: int = 112
    patch_size: int = 14
    width: int = 128
    depth: int = 4
    heads: int = 2
    text_depth: int = 2
    text_heads: int = 2
    caption_depth: int = 2
    head_hidden: int = 256
    head_bottleneck: int = 64
    prototypes: int = 256

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class ImageTower(nn.Module):
    """TIPS image tower: ``forward(pixels, mask)`` -> normed tokens ``[cls1, cls2, patches...]``."""

    def __init__(self, sizes: TowerSizes):
        super().__init__()
        arch = {"embed_dim": sizes.width, "depth": sizes.depth, "ffn": "mlp", "mlp_hidden": 4 * sizes.width,
                "reg_tokens": 1, "patch_size": sizes.patch_size, "grid": sizes.grid}
        self.vit = build_tips_vit(arch, sizes.heads)
        # Resample position embeddings for other input sizes (local crops) as the TIPS loader does.
        use_pos_embed_interpolation(self.vit, "bilinear_antialias")
        self.mask_token = nn.Parameter(torch.zeros(1, sizes.width))

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, h, w) bool replaces those patch embeddings by the mask token (DINOv2 order)."""
        vit = self.vit
        x = vit.patch_embed(pixels)  # (B, h, w, D): dynamic image size keeps the grid
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype)[None], x)
        x = vit.norm_pre(vit._pos_embed(x))
        return vit.norm(vit.blocks(x))


def text_tower(vocab_size: int, sizes: TowerSizes) -> TipsTextEncoder:
    """A TIPS text tower of the image tower's width (TIPS has no projection between them).

    Token embeddings start at std ``1/sqrt(width)``: the tower scales them by ``sqrt(width)``, so
    they enter at unit scale, like the sinusoidal positions that carry word order.
    """
    model = TipsTextEncoder(vocab_size, sizes.width, sizes.text_depth, sizes.text_heads, 4 * sizes.width)
    nn.init.normal_(model.token_embedding.weight, std=sizes.width**-0.5)
    return model


class ProjectionHead(nn.Module):
    """DINO/iBOT head: MLP -> L2-normalised bottleneck -> cosine against L2-normalised prototypes."""

    def __init__(self, sizes: TowerSizes):
        super().__init__()
        h = sizes.head_hidden
        self.mlp = nn.Sequential(nn.Linear(sizes.width, h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                                 nn.Linear(h, sizes.head_bottleneck))
        self.prototypes = nn.Linear(sizes.head_bottleneck, sizes.prototypes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes.weight, dim=-1).T


class CaptionDecoder(nn.Module):
    """Autoregressive transformer decoder over SentencePiece ids, cross-attending to patch tokens.

    Input ids are shifted right behind a begin token (id ``vocab_size``); the target after the
    last word is the pad id 0, which thus doubles as end-of-caption.
    """

    def __init__(self, vocab_size: int, max_len: int, sizes: TowerSizes):
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embed = nn.Embedding(vocab_size + 1, sizes.width)
        self.pos = nn.Parameter(torch.randn(1, max_len, sizes.width) * 0.02)
        layer = nn.TransformerDecoderLayer(sizes.width, sizes.text_heads, 4 * sizes.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, sizes.caption_depth)
        self.norm = nn.LayerNorm(sizes.width)
        self.out = nn.Linear(sizes.width, vocab_size)

    def forward(self, ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, vocab) of each next token given ``ids`` (B, L) and ``memory`` (B, N, D)."""
        begin = torch.full_like(ids[:, :1], self.vocab_size)
        inputs = torch.cat([begin, ids[:, :-1]], dim=1)
        length = inputs.shape[1]
        x = self.embed(inputs) + self.pos[:, :length]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=ids.device, dtype=x.dtype)
        x = self.blocks(x, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.out(self.norm(x))
