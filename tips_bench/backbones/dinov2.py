"""DINOv2 (facebookresearch/dinov2) with and without registers, on timm's ViT.

Official ``.pth`` state dicts load through timm's ``checkpoint_filter_fn``. Without registers
the hub model resamples position embeddings with its own offset formula (see ``vit.py``); the
register models use timm's default, which matches the hub code exactly.
"""

from __future__ import annotations

import math

import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from tips_bench.backbones.checkpoints import CheckpointFiles, file_hash
from tips_bench.backbones.families import register_family
from tips_bench.backbones.formats import count_blocks, describe_state_dict, guess_family, read_state_dict
from tips_bench.backbones.spec import BackboneSpec
from tips_bench.backbones.vit import TimmViTBackbone
from tips_bench.errors import CheckpointError


def _global_fn(model: VisionTransformer, final: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"cls": final[:, 0]}


def _create(spec: BackboneSpec, **kwargs) -> VisionTransformer:
    a = spec.architecture
    return timm.create_model(a["timm_name"], pretrained=False, num_classes=0, dynamic_img_size=True,
                             embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"], **kwargs)


@register_family("dinov2")
def load_dinov2(spec: BackboneSpec, files: CheckpointFiles | None, device: str, seed: int = 0) -> TimmViTBackbone:
    """Build a DINOv2 backbone from its official ``.pth`` (or randomly when ``files`` is None)."""
    arch = spec.architecture
    if files is None:
        torch.manual_seed(seed)
        model = _create(spec)
        return TimmViTBackbone(spec, model, _global_fn, device)
    path = files.require("vision")
    sd = read_state_dict(path)
    family = guess_family(sd)
    # official hub .pth (register_tokens, mask_token) or timm's export of it (reg_token, e.g. HF safetensors)
    regs = next((sd[k].shape[1] for k in ("register_tokens", "reg_token") if k in sd), 0)
    width, depth = sd["cls_token"].shape[-1] if "cls_token" in sd else 0, count_blocks(sd, "blocks.")
    if family not in ("dinov2", "timm_vit") or regs != arch["registers"] or width != arch["embed_dim"] \
            or depth != arch["depth"]:
        raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not {spec.name} (width {arch['embed_dim']}, "
                              f"{arch['depth']} blocks, {arch['registers']} registers); pass the matching file")
    grid = math.isqrt(sd["pos_embed"].shape[1] - (0 if "reg_token" in sd else 1))
    model = _create(spec, img_size=grid * spec.patch_size)
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    backbone = TimmViTBackbone(spec, model, _global_fn, device)
    backbone.checkpoint_hash = file_hash(path)
    return backbone
