"""CLIP-family backbones: OpenAI CLIP, OpenCLIP ViTs and SigLIP.

Image tower: timm's ViT (dynamic input size, layer taps, same contract as TIPS/DINOv2), loaded
with timm's converters from the original files. Text tower and tokenizer: open_clip, built from
the same file (its ``visual`` part is dropped after loading to save memory).

* OpenAI ``.pt`` (TorchScript) and open_clip native ``.bin``: architecture inferred from the
  weights (``open_clip.model.build_model_from_openai_state_dict``); QuickGELU for OpenAI.
* open_clip models with a timm trunk (SigLIP): the trunk is the timm model named in the
  open_clip config; the text tokenizer needs the Hugging Face tokenizer files and
  ``transformers``.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import open_clip
import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from tips_bench.backbones.checkpoints import CheckpointFiles, file_hash
from tips_bench.backbones.formats import (
    StateDict,
    count_blocks,
    describe_state_dict,
    guess_family,
    read_state_dict,
)
from tips_bench.backbones.spec import BackboneSpec
from tips_bench.backbones.vit import TimmViTBackbone
from tips_bench.errors import CheckpointError, TipsBenchError


def _clip_globals(model: VisionTransformer, final: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"embedding": model.forward_head(final), "cls": final[:, 0]}


def _siglip_globals(model: VisionTransformer, final: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"embedding": model.forward_head(final)}


class OpenClipBackbone(TimmViTBackbone):
    """timm image tower plus an open_clip text tower."""

    def __init__(self, spec: BackboneSpec, model: VisionTransformer, text_model: torch.nn.Module,
                 tokenizer, device: str | torch.device = "cpu", map_head: bool = False):
        names = ("embedding",) if map_head else ("embedding", "cls")
        super().__init__(spec, model, _siglip_globals if map_head else _clip_globals, device, global_names=names)
        self.text_model = text_model.eval().requires_grad_(False).to(self.device)
        self.tokenizer = tokenizer
        self.map_head = map_head
        self.text_dim = int(text_model.text_projection.shape[-1]) if hasattr(text_model, "text_projection") and \
            text_model.text_projection is not None and hasattr(text_model.text_projection, "shape") else self.embed_dim

    def to_text_space(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.map_head:
            return self.model.head(tokens)
        pool = self.model.attn_pool  # MAP head with each token attending only to itself
        dim = pool.kv.out_features // 2
        v = torch.nn.functional.linear(tokens, pool.kv.weight[dim:], pool.kv.bias[dim:])
        x = pool.proj(v)
        return x + pool.mlp(pool.norm(x)) if pool.mlp is not None else x

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise CheckpointError(f"{self.name} needs its tokenizer files for text; download the folder named in "
                                  "'tips-bench backbones' and place it beside the weights as 'tokenizer'")
        return self.text_model.encode_text(self.tokenizer(texts).to(self.device))

    @property
    def logit_scale(self) -> float:
        return float(self.text_model.logit_scale.exp())


def clip_vit_from_state_dict(sd: StateDict, quick_gelu: bool, num_heads: int | None = None) -> VisionTransformer:
    """A timm CLIP ViT shaped like the OpenAI-layout ``visual.*`` weights, weights loaded."""
    width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    base = "vit_base_patch16_clip_quickgelu_224" if quick_gelu else "vit_base_patch16_clip_224"
    model = timm.create_model(
        base, pretrained=False, img_size=grid * patch, patch_size=patch, embed_dim=width,
        depth=count_blocks(sd, "visual.transformer.resblocks."), num_heads=num_heads or width // 64,
        num_classes=sd["visual.proj"].shape[1], dynamic_img_size=True,
    )
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return model


def _text_only(model: torch.nn.Module) -> torch.nn.Module:
    model.visual = torch.nn.Identity()
    return model


def _check_clip_variant(spec: BackboneSpec, sd: StateDict, path: Path) -> None:
    a = spec.architecture
    width = sd["visual.conv1.weight"].shape[0]
    depth = count_blocks(sd, "visual.transformer.resblocks.")
    patch = sd["visual.conv1.weight"].shape[-1]
    res = patch * math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    expected = (a.get("embed_dim"), a.get("depth"), spec.patch_size, spec.native_resolution)
    if a.get("embed_dim") and (width, depth, patch, res) != expected:
        raise CheckpointError(f"{path} is {describe_state_dict(sd)} (patch {patch}, {res}px), not {spec.name} "
                              f"(width {expected[0]}, {expected[1]} blocks, patch {expected[2]}, {expected[3]}px)")


def load_clip(spec: BackboneSpec, files: CheckpointFiles | None, device: str, arch: str | None = None,
              seed: int = 0) -> OpenClipBackbone:
    """OpenAI CLIP or an OpenCLIP ViT with the OpenAI key layout (architecture read from the weights)."""
    arch = arch or spec.architecture.get("open_clip_name")
    if arch and arch not in open_clip.list_models():
        raise TipsBenchError(f"'{arch}' is not an open_clip architecture; see open_clip.list_models()")
    quick_gelu = bool(spec.architecture.get("quick_gelu")) or bool(arch and arch.endswith("quickgelu")) or \
        bool(arch and open_clip.get_model_config(arch).get("quick_gelu"))
    inline = spec.architecture.get("open_clip_config")
    if files is None and inline:  # a definition that declares its open_clip architecture (tiny test models)
        torch.manual_seed(seed)
        sd, ckpt_hash = open_clip.model.CLIP(**inline, quick_gelu=quick_gelu).state_dict(), ""
    elif files is None:
        if not arch:
            raise TipsBenchError(f"{spec.name} --random-init needs --arch <open_clip model name>")
        torch.manual_seed(seed)
        sd, ckpt_hash = _quiet(open_clip.create_model, arch, pretrained=None).state_dict(), ""
    else:
        path = files.require("model")
        sd = read_state_dict(path)
        if guess_family(sd) != "clip":
            raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not a CLIP checkpoint with OpenAI key layout")
        _check_clip_variant(spec, sd, path)
        ckpt_hash = file_hash(path)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    if inline:
        v = inline["vision_cfg"]
        image = clip_vit_from_state_dict(sd, quick_gelu, num_heads=v["width"] // v.get("head_width", 64))
        text = open_clip.model.CLIP(**inline, quick_gelu=quick_gelu)
        text.load_state_dict(sd)
    else:
        image = clip_vit_from_state_dict(sd, quick_gelu)
        # open_clip casts to fp16 while building from an OpenAI state dict; features are compared in fp32.
        text = open_clip.model.build_model_from_openai_state_dict(dict(sd), quick_gelu=quick_gelu,
                                                                  cast_dtype=None).float()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(sd["positional_embedding"].shape[0]))
    backbone = OpenClipBackbone(spec, image, _text_only(text), tokenizer, device)
    backbone.checkpoint_hash = ckpt_hash
    return backbone


def _quiet(fn, *args, **kwargs):
    """Call an open_clip factory without its 'initialized randomly' warning (we asked for that)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return fn(*args, **kwargs)
    finally:
        logger.setLevel(level)


def load_siglip(spec: BackboneSpec, files: CheckpointFiles | None, device: str, seed: int = 0) -> OpenClipBackbone:
    """SigLIP from an open_clip release file (``visual.trunk.*`` = timm, text in open_clip)."""
    arch = spec.architecture["open_clip_name"]
    cfg = open_clip.get_model_config(arch)
    torch.manual_seed(seed)
    clip = _quiet(open_clip.create_model, arch, pretrained=None)
    # big_vision's SigLIP uses flax's nn.gelu (tanh approximation) in every MLP, image and text towers;
    # timm's vit_so400m_patch14_siglip_* trunks and open_clip's text tower build the exact (erf) GELU.
    for module in clip.modules():
        if isinstance(module, torch.nn.GELU):
            module.approximate = "tanh"
    ckpt_hash = ""
    if files is not None:
        path = files.require("model")
        sd = read_state_dict(path)
        if guess_family(sd) != "open_clip_timm":
            raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not an open_clip SigLIP checkpoint")
        try:
            clip.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit {spec.name} ({str(exc).splitlines()[0]}); "
                                  "pass the file of the matching SigLIP variant") from exc
        ckpt_hash = file_hash(path)
    image = copy.deepcopy(clip.visual.trunk)
    image.set_input_size(img_size=spec.native_resolution) if hasattr(image, "set_input_size") else None
    image.dynamic_img_size = True
    image.patch_embed.set_input_size(img_size=spec.native_resolution)
    image.patch_embed.strict_img_size = False
    image.patch_embed.flatten = False
    image.patch_embed.output_fmt = timm.layers.Format.NHWC
    tokenizer = None
    tok_dir = files.find("tokenizer") if files is not None else None
    if tok_dir is not None:
        try:
            tokenizer = open_clip.tokenizer.HFTokenizer(str(tok_dir), context_length=cfg["text_cfg"]["context_length"],
                                                        clean="canonicalize")
        except ImportError as exc:
            raise TipsBenchError("SigLIP text needs the 'transformers' package: pip install transformers") from exc
    return _finish(OpenClipBackbone(spec, image, _text_only(clip), tokenizer, device, map_head=True), ckpt_hash)


def _finish(backbone: OpenClipBackbone, ckpt_hash: str) -> OpenClipBackbone:
    backbone.checkpoint_hash = ckpt_hash
    return backbone
