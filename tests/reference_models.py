"""Independent reference forward passes for the DINOv2 and SigLIP image towers, in plain torch ops.

Written from the architecture descriptions of the original code, not from timm or open_clip (whose
models are what tips-bench wraps), so a wrong key mapping, a wrong interpolation or a wrong activation
in the wrapper shows up as a difference:

* DINOv2 (facebookresearch/dinov2 ``dinov2/models/vision_transformer.py``, hub kwargs): patch conv;
  ``cat(cls, patches) + pos_embed`` with the patch part resampled by the hub's own rule; register
  tokens inserted after ``cls`` (no position embedding); pre-LN blocks with LayerScale (ls1/ls2);
  attention with an explicit softmax; final LayerNorm (eps 1e-6). Reads the official ``.pth`` keys.
* SigLIP (google-research/big_vision ``models/vit.py``, ``pool_type='map'``): patch conv + learned
  position embedding (no class token); pre-LN blocks without LayerScale; MLP with flax's default
  ``nn.gelu`` (the tanh approximation); final LayerNorm; MAP head (a learned probe attends over the
  tokens, output projection, ``x + mlp(norm(x))``, the single probe token). Reads the timm key names
  of open_clip's ``visual.trunk.*`` release files (``attn_pool.kv`` packs the key and value kernels).
* SigLIP text tower (big_vision ``models/proj/image_text/text_transformer.py``): token embedding +
  learned position embedding, the same pre-LN encoder (no causal mask, tanh GELU), final LayerNorm,
  the last token, a dense head. Reads open_clip's ``text.*`` names.

Weight helpers write random, perturbed weights in the original DINOv2 layout (norm weights near 1,
random biases, tokens and position embeddings, LayerScale near 1), so that every tensor matters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

StateDict = dict[str, torch.Tensor]
LN_EPS = 1e-6


def _ln(x: torch.Tensor, sd: StateDict, prefix: str, eps: float = LN_EPS) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def _dense(x: torch.Tensor, sd: StateDict, prefix: str) -> torch.Tensor:
    return F.linear(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head attention, explicit softmax: (B, Nq, D) queries, (B, Nk, D) keys/values -> (B, Nq, D)."""
    b, nq, d = q.shape
    nk, hd = k.shape[1], d // num_heads
    q = q.reshape(b, nq, num_heads, hd).transpose(1, 2)
    k = k.reshape(b, nk, num_heads, hd).transpose(1, 2)
    v = v.reshape(b, nk, num_heads, hd).transpose(1, 2)
    logits = (q * hd**-0.5) @ k.transpose(-2, -1)
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return (weights @ v).transpose(1, 2).reshape(b, nq, d)


def _patchify(x: torch.Tensor, sd: StateDict, prefix: str, patch: int) -> torch.Tensor:
    """Non-overlapping patch conv, flattened row-major to (B, rows * cols, D)."""
    y = F.conv2d(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"), stride=patch)
    return y.flatten(2).transpose(1, 2)


def _grid(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], rows, cols, -1).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------- DINOv2


def dinov2_pos_embed(
    pos_embed: torch.Tensor, rows: int, cols: int, offset: float, antialias: bool
) -> torch.Tensor:
    """The hub's ``interpolate_pos_encoding``: (1, 1 + M*M, D) -> (1, 1 + rows*cols, D).

    Nothing is resampled when the patch count equals M*M and the image is square. Otherwise the
    patch part is resampled bicubically, driven by
    ``scale_factor = ((rows + offset) / M, (cols + offset) / M)`` when ``offset`` is non-zero (the
    models without registers use 0.1, no antialias) and by the target size when it is zero (register
    models: antialias on).
    """
    n = pos_embed.shape[1] - 1
    if rows * cols == n and rows == cols:
        return pos_embed
    m = math.isqrt(n)
    dim = pos_embed.shape[-1]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    grid = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:  # the hub's rule: the scale factor drives the sampling positions, not the output size
        grid = F.interpolate(grid, scale_factor=((rows + offset) / m, (cols + offset) / m), mode="bicubic",
                             antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=antialias)
    assert tuple(grid.shape[-2:]) == (rows, cols), grid.shape
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)


def _dinov2_block(x: torch.Tensor, sd: StateDict, p: str, num_heads: int) -> torch.Tensor:
    y = _ln(x, sd, f"{p}.norm1")
    q, k, v = _dense(y, sd, f"{p}.attn.qkv").chunk(3, dim=-1)
    x = x + sd[f"{p}.ls1.gamma"] * _dense(attention(q, k, v, num_heads), sd, f"{p}.attn.proj")
    y = _dense(F.gelu(_dense(_ln(x, sd, f"{p}.norm2"), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    return x + sd[f"{p}.ls2.gamma"] * y


@torch.no_grad()
def dinov2_forward(
    sd: StateDict, x: torch.Tensor, num_heads: int, patch: int = 14, layers: tuple[int, ...] = ()
) -> dict[str, object]:
    """DINOv2 on normalised pixels: ``cls`` (B, D), ``patches`` (B, D, h, w), normed block outputs ``layers``.

    Registers (``register_tokens`` in the state dict) switch the position-embedding rule to the
    register models' (size-driven, antialias on, offset 0), as the hub constructors do.
    """
    rows, cols = x.shape[-2] // patch, x.shape[-1] // patch
    regs = sd.get("register_tokens")
    offset, antialias = (0.0, True) if regs is not None else (0.1, False)
    tokens = _patchify(x, sd, "patch_embed.proj", patch)
    b = tokens.shape[0]
    tokens = torch.cat([sd["cls_token"].expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + dinov2_pos_embed(sd["pos_embed"], rows, cols, offset, antialias)
    n_prefix = 1
    if regs is not None:
        tokens = torch.cat([tokens[:, :1], regs.expand(b, -1, -1), tokens[:, 1:]], dim=1)
        n_prefix += regs.shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    taps = {}
    for i in range(depth):
        tokens = _dinov2_block(tokens, sd, f"blocks.{i}", num_heads)
        if i in layers:
            taps[i] = _grid(_ln(tokens, sd, "norm")[:, n_prefix:], rows, cols)
    final = _ln(tokens, sd, "norm")
    return {"cls": final[:, 0], "patches": _grid(final[:, n_prefix:], rows, cols), "layers": taps}


def random_dinov2_state_dict(
    embed_dim: int, depth: int, grid: int, registers: int = 0, patch: int = 14, mlp_ratio: int = 4,
    seed: int = 0,
) -> StateDict:
    """Random weights in the official DINOv2 ``.pth`` layout (``block_chunks=0`` key names)."""
    g = torch.Generator().manual_seed(seed)
    d, hidden = embed_dim, mlp_ratio * embed_dim

    def randn(*shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=g)

    sd: StateDict = {
        "cls_token": randn(1, 1, d),
        "pos_embed": randn(1, 1 + grid * grid, d),
        "mask_token": randn(1, d),
        "patch_embed.proj.weight": randn(d, 3, patch, patch, std=(3 * patch * patch) ** -0.5),
        "patch_embed.proj.bias": randn(d, std=0.1),
    }
    if registers:
        sd["register_tokens"] = randn(1, registers, d)
    for i in range(depth):
        p = f"blocks.{i}"
        sd.update({
            f"{p}.norm1.weight": randn(d, std=0.1, mean=1.0), f"{p}.norm1.bias": randn(d, std=0.1),
            f"{p}.attn.qkv.weight": randn(3 * d, d, std=d**-0.5), f"{p}.attn.qkv.bias": randn(3 * d, std=0.1),
            f"{p}.attn.proj.weight": randn(d, d, std=d**-0.5), f"{p}.attn.proj.bias": randn(d, std=0.1),
            f"{p}.ls1.gamma": randn(d, std=0.1, mean=1.0),
            f"{p}.norm2.weight": randn(d, std=0.1, mean=1.0), f"{p}.norm2.bias": randn(d, std=0.1),
            f"{p}.mlp.fc1.weight": randn(hidden, d, std=d**-0.5), f"{p}.mlp.fc1.bias": randn(hidden, std=0.1),
            f"{p}.mlp.fc2.weight": randn(d, hidden, std=hidden**-0.5), f"{p}.mlp.fc2.bias": randn(d, std=0.1),
            f"{p}.ls2.gamma": randn(d, std=0.1, mean=1.0),
        })
    sd["norm.weight"] = randn(d, std=0.1, mean=1.0)
    sd["norm.bias"] = randn(d, std=0.1)
    return sd


# --------------------------------------------------------------------------------------------- SigLIP


def resample_bicubic_antialias(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(1, M*M, D) learned position embeddings resampled to (1, rows*cols, D), bicubic with antialias."""
    m = math.isqrt(pos_embed.shape[1])
    if (rows, cols) == (m, m):
        return pos_embed
    grid = pos_embed.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)


def _mlp(x: torch.Tensor, sd: StateDict, p: str, gelu: str) -> torch.Tensor:
    return _dense(F.gelu(_dense(x, sd, f"{p}.fc1"), approximate=gelu), sd, f"{p}.fc2")


@torch.no_grad()
def siglip_forward(
    sd: StateDict, x: torch.Tensor, num_heads: int, patch: int, gelu: str = "tanh",
    layers: tuple[int, ...] = (),
) -> dict[str, object]:
    """SigLIP image tower on normalised pixels: MAP-head ``embedding`` (B, D), ``patches`` (B, D, h, w).

    ``sd`` holds the trunk weights under their timm names (``visual.trunk.`` stripped). ``gelu`` is
    ``'tanh'`` for big_vision's ``nn.gelu`` (flax's default is the tanh approximation) or ``'none'``
    for the exact erf form.
    """
    rows, cols = x.shape[-2] // patch, x.shape[-1] // patch
    tokens = _patchify(x, sd, "patch_embed.proj", patch)
    tokens = tokens + resample_bicubic_antialias(sd["pos_embed"], rows, cols)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    taps = {}
    for i in range(depth):
        p = f"blocks.{i}"
        q, k, v = _dense(_ln(tokens, sd, f"{p}.norm1"), sd, f"{p}.attn.qkv").chunk(3, dim=-1)
        tokens = tokens + _dense(attention(q, k, v, num_heads), sd, f"{p}.attn.proj")
        tokens = tokens + _mlp(_ln(tokens, sd, f"{p}.norm2"), sd, f"{p}.mlp", gelu)
        if i in layers:
            taps[i] = _grid(_ln(tokens, sd, "norm"), rows, cols)
    encoded = _ln(tokens, sd, "norm")
    # MAP head: a learned probe (query) attends over every token; separate query / key / value kernels.
    b, d = encoded.shape[0], encoded.shape[-1]
    probe = sd["attn_pool.latent"].expand(b, -1, -1)
    w_kv, b_kv = sd["attn_pool.kv.weight"], sd["attn_pool.kv.bias"]
    q = _dense(probe, sd, "attn_pool.q")
    k = F.linear(encoded, w_kv[:d], b_kv[:d])
    v = F.linear(encoded, w_kv[d:], b_kv[d:])
    pooled = _dense(attention(q, k, v, num_heads), sd, "attn_pool.proj")
    pooled = pooled + _mlp(_ln(pooled, sd, "attn_pool.norm"), sd, "attn_pool.mlp", gelu)
    return {"embedding": pooled[:, 0], "patches": _grid(encoded, rows, cols), "layers": taps}


@torch.no_grad()
def siglip_text_forward(sd: StateDict, ids: torch.Tensor, num_heads: int, gelu: str = "tanh") -> torch.Tensor:
    """SigLIP text embedding (B, D) of token ids (B, L); ``sd``: open_clip's ``text.*`` weights, no prefix."""
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    for i in range(depth):
        p = f"transformer.resblocks.{i}"
        y = _ln(x, sd, f"{p}.ln_1")
        q, k, v = F.linear(y, sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"]).chunk(3, dim=-1)
        x = x + _dense(attention(q, k, v, num_heads), sd, f"{p}.attn.out_proj")
        y = _ln(x, sd, f"{p}.ln_2")
        x = x + _dense(F.gelu(_dense(y, sd, f"{p}.mlp.c_fc"), approximate=gelu), sd, f"{p}.mlp.c_proj")
    return _dense(_ln(x, sd, "ln_final")[:, -1], sd, "text_projection")
