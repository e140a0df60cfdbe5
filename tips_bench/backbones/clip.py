"""CLIP-family backbones: OpenAI CLIP, OpenCLIP ViTs and SigLIP.

Image tower: timm's ViT (dynamic input size, layer taps, same contract as TIPS/DINOv2), loaded
with timm's converters from the original files. Text tower and tokenizer: open_clip, built from
the same file (its ``visual`` part is dropped after loading to save memory).

* OpenAI ``.pt`` (TorchScript or state dict) and open_clip's plain-ViT ``.bin``/``.safetensors``
  (the same key layout): the architecture is read from the tensor shapes (:class:`ClipFileShape`),
  heads and activation from ``--arch``/the definition, else OpenAI's convention (QuickGELU); the
  text tower is built in float32 (open_clip's ``build_model_from_openai_state_dict`` would round
  float32 weights to float16).
* open_clip models with a timm trunk (SigLIP): the trunk is the timm model named in the
  open_clip config; the text tokenizer needs the Hugging Face tokenizer files and
  ``transformers``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import open_clip
import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from tips_bench.backbones.checkpoints import CheckpointFiles, file_hash
from tips_bench.backbones.families import register_family
from tips_bench.backbones.formats import (
    StateDict,
    count_blocks,
    describe_state_dict,
    guess_family,
    is_torchscript_archive,
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


def _text_only(model: torch.nn.Module) -> torch.nn.Module:
    model.visual = torch.nn.Identity()
    return model


def clip_vit_from_state_dict(sd: StateDict, quick_gelu: bool, num_heads: int | None = None) -> VisionTransformer:
    """A timm CLIP ViT shaped like the OpenAI-layout ``visual.*`` weights, weights loaded."""
    shape = ClipFileShape.of(sd)
    base = "vit_base_patch16_clip_quickgelu_224" if quick_gelu else "vit_base_patch16_clip_224"
    model = timm.create_model(
        base, pretrained=False, img_size=shape.image_size, patch_size=shape.patch, embed_dim=shape.width,
        depth=shape.layers, num_heads=num_heads or shape.width // 64, mlp_ratio=shape.mlp_ratio,
        num_classes=shape.embed_dim, dynamic_img_size=True,
    )
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return model


#: Keys OpenAI's TorchScript releases carry beside the weights (architecture hints, not tensors to load).
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
#: Vision options of an open_clip config that the timm image tower builds (the others change the network).
_TIMM_BUILDS = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "patch_dropout",
                "output_tokens"}
_CLIP_ARGS = ("embed_dim", "vision_cfg", "text_cfg", "init_logit_scale", "init_logit_bias", "nonscalar_logit_scale")


@dataclass(frozen=True)
class ClipFileShape:
    """The architecture an OpenAI-layout CLIP ViT state dict determines (all but the head counts)."""

    width: int
    layers: int
    patch: int
    grid: int
    mlp_ratio: float
    embed_dim: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_mlp_ratio: float

    @property
    def image_size(self) -> int:
        return self.grid * self.patch

    @classmethod
    def of(cls, sd: StateDict) -> ClipFileShape:
        conv = sd["visual.conv1.weight"]
        width, text_width = int(conv.shape[0]), int(sd["ln_final.weight"].shape[0])
        return cls(
            width=width,
            layers=count_blocks(sd, "visual.transformer.resblocks."),
            patch=int(conv.shape[-1]),
            grid=math.isqrt(int(sd["visual.positional_embedding"].shape[0]) - 1),
            mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
            embed_dim=int(sd["text_projection"].shape[-1]),
            context_length=int(sd["positional_embedding"].shape[0]),
            vocab_size=int(sd["token_embedding.weight"].shape[0]),
            text_width=text_width,
            text_layers=count_blocks(sd, "transformer.resblocks."),
            text_mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
        )

    def mismatches(self, cfg: dict) -> list[str]:
        """How the file differs from an open_clip config (empty when it fits)."""
        v, t = dict(cfg.get("vision_cfg") or {}), dict(cfg.get("text_cfg") or {})
        dv, dt = open_clip.model.CLIPVisionCfg(), open_clip.model.CLIPTextCfg()
        size = v.get("image_size", dv.image_size)
        if isinstance(size, list | tuple):
            size = size[0] if len(set(size)) == 1 else tuple(size)
        pairs = [
            ("vision width", self.width, v.get("width", dv.width)),
            ("vision blocks", self.layers, v.get("layers", dv.layers)),
            ("patch size", self.patch, v.get("patch_size", dv.patch_size)),
            ("image size", self.image_size, size),
            ("vision MLP ratio", self.mlp_ratio, float(v.get("mlp_ratio", dv.mlp_ratio))),
            ("embedding width", self.embed_dim, cfg.get("embed_dim")),
            ("text width", self.text_width, t.get("width", dt.width)),
            ("text blocks", self.text_layers, t.get("layers", dt.layers)),
            ("context length", self.context_length, t.get("context_length", dt.context_length)),
            ("vocabulary size", self.vocab_size, t.get("vocab_size", dt.vocab_size)),
            ("text MLP ratio", self.text_mlp_ratio, float(t.get("mlp_ratio", dt.mlp_ratio))),
        ]
        return [f"{name} {have} where it says {want}" for name, have, want in pairs if have != want]

    def config(self) -> dict:
        """The open_clip config OpenAI's convention gives the file: 64-wide attention heads."""
        return {"embed_dim": self.embed_dim,
                "vision_cfg": {"layers": self.layers, "width": self.width, "head_width": 64,
                               "mlp_ratio": self.mlp_ratio, "patch_size": self.patch, "image_size": self.image_size},
                "text_cfg": {"context_length": self.context_length, "vocab_size": self.vocab_size,
                             "width": self.text_width, "heads": self.text_width // 64, "layers": self.text_layers,
                             "mlp_ratio": self.text_mlp_ratio}}


def _check_vit_layout(sd: StateDict, path: Path | str) -> None:
    """One sentence unless ``sd`` is a CLIP ViT in OpenAI's key layout (open_clip's own for its plain ViTs)."""
    family = guess_family(sd)
    if family != "clip":
        raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not a CLIP checkpoint with OpenAI key layout")
    if "visual.proj" not in sd or "visual.positional_embedding" not in sd:
        raise CheckpointError(f"{path} is a CLIP model with a ResNet image tower; only CLIP ViTs are supported")
    missing = [k for k in ("positional_embedding", "token_embedding.weight", "ln_final.weight", "text_projection",
                           "transformer.resblocks.0.mlp.c_fc.weight") if k not in sd]
    if missing:
        note = "; its text.* names are an open_clip custom-text model" if "text.ln_final.weight" in sd else ""
        raise CheckpointError(f"{path} has a CLIP ViT image tower but not OpenAI's text tower keys (no "
                              f"'{missing[0]}'{note}), which the openclip backbone does not read")


def _arch_config(spec: BackboneSpec, arch: str | None) -> tuple[str, dict] | None:
    """(label, open_clip config) the definition or ``--arch`` declares, or None when the file alone decides."""
    inline = spec.architecture.get("open_clip_config")
    if inline and not arch:
        return f"{spec.name}'s open_clip_config", copy.deepcopy(inline)
    name = arch or spec.architecture.get("open_clip_name")
    if not name:
        return None
    if name not in open_clip.list_models():
        raise TipsBenchError(f"'{name}' is not an open_clip architecture; see open_clip.list_models()")
    cfg = open_clip.get_model_config(name)
    v, t = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    defaults = vars(open_clip.model.CLIPVisionCfg())
    other = [k for k, val in v.items() if k not in _TIMM_BUILDS and val != defaults.get(k)]
    if other or cfg.get("custom_text") or t.get("hf_model_name") or "multimodal_cfg" in cfg:
        what = f"vision option '{other[0]}'" if other else "a custom text tower"
        raise TipsBenchError(f"--arch {name} has {what}, which the openclip backbone (a timm CLIP ViT beside "
                             "open_clip's standard text tower) does not build; pick a plain open_clip ViT architecture")
    return f"--arch {name}" if arch else f"{spec.name} ({name})", cfg


def _quick_gelu(spec: BackboneSpec, arch: str | None, declared: tuple[str, dict] | None, openai_file: bool,
                path: Path | str) -> bool:
    """QuickGELU or GELU: ``--arch``, else the definition, else the file (OpenAI key layout: QuickGELU)."""
    said = spec.architecture.get("quick_gelu")
    cfg_quick = None if declared is None else bool(declared[1].get("quick_gelu")) or \
        bool(arch and arch.endswith("quickgelu"))
    if arch and said and not cfg_quick:
        raise CheckpointError(f"--arch {arch} uses GELU but {spec.name} is a QuickGELU model; pass --arch "
                              f"{arch}-quickgelu or drop --arch")
    quick = cfg_quick if arch else (bool(said) if said is not None else cfg_quick)
    if quick is None:
        quick = True  # OpenAI's key layout, no architecture named: OpenAI's activation
    if openai_file and not quick:
        chosen = declared[0] if declared else spec.name
        raise CheckpointError(f"{path} is an OpenAI CLIP release (QuickGELU) but {chosen} uses GELU; pass the "
                              "-quickgelu variant of the architecture")
    return quick


def _file_spec(spec: BackboneSpec, shape: ClipFileShape, path: Path | str) -> BackboneSpec:
    """The generic definition with the file's patch size and resolution; others must agree with the file."""
    if spec.architecture.get("from_file"):
        return replace(spec, patch_size=shape.patch, native_resolution=shape.image_size)
    a = spec.architecture
    have = (shape.width, shape.layers, shape.patch, shape.image_size)
    want = (a.get("embed_dim", shape.width), a.get("depth", shape.layers), spec.patch_size, spec.native_resolution)
    if have != want:
        raise CheckpointError(f"{path} is a CLIP ViT of width {have[0]} with {have[1]} blocks, patch {have[2]} at "
                              f"{have[3]}px, not {spec.name} (width {want[0]}, {want[1]} blocks, patch {want[2]} at "
                              f"{want[3]}px); pass its own file, or use the 'openclip' backbone, which reads the file")
    return spec


def _weights(spec: BackboneSpec, files: CheckpointFiles | None, arch: str | None, seed: int,
             declared: tuple[str, dict] | None) -> tuple[StateDict, str, str, bool]:
    """(state dict, its hash, where it came from, whether it is an OpenAI release file)."""
    if files is None:
        if declared is None:
            raise TipsBenchError(f"{spec.name} --random-init needs --arch <open_clip model name>")
        torch.manual_seed(seed)
        inline = spec.architecture.get("open_clip_config")
        if inline and not arch:
            sd = open_clip.model.CLIP(**inline, quick_gelu=bool(spec.architecture.get("quick_gelu"))).state_dict()
        else:
            name = arch or spec.architecture["open_clip_name"]
            sd = _quiet(open_clip.create_model, name, pretrained=None).state_dict()
        return sd, "", declared[0], False
    path = files.require("model")
    sd = read_state_dict(path)
    _check_vit_layout(sd, path)
    openai_file = is_torchscript_archive(path) or any(k in sd for k in OPENAI_METADATA)
    return sd, file_hash(path), str(path), openai_file


def resolve_spec(spec: BackboneSpec, checkpoint: str | Path | None = None, arch: str | None = None,
                 random_init: bool = False) -> BackboneSpec:
    """The definition as the backbone will run it: the generic 'openclip' takes patch and size from the file."""
    if spec.family != "clip" or not spec.architecture.get("from_file"):
        return spec
    declared = _arch_config(spec, arch)
    if random_init:
        if declared is None:
            raise TipsBenchError(f"{spec.name} --random-init needs --arch <open_clip model name>")
        v = declared[1].get("vision_cfg") or {}
        patch, size = int(v.get("patch_size", 16)), v.get("image_size", 224)
        return replace(spec, patch_size=patch, native_resolution=int(size[0] if isinstance(size, list | tuple)
                                                                      else size))
    path = CheckpointFiles(spec, checkpoint).require("model")
    sd = read_state_dict(path)
    _check_vit_layout(sd, path)
    return _file_spec(spec, ClipFileShape.of(sd), path)


@register_family("clip")
def load_clip(spec: BackboneSpec, files: CheckpointFiles | None, device: str, arch: str | None = None,
              seed: int = 0) -> OpenClipBackbone:
    """A CLIP ViT in OpenAI's key layout (OpenAI releases, open_clip's plain ViTs), architecture from the file.

    Patch size, widths, block counts, grid, context and vocabulary come from the tensor shapes; the
    head counts and the activation from ``--arch`` or the definition, else OpenAI's convention
    (64-wide heads, QuickGELU). A file that contradicts the definition or ``--arch`` is refused.
    The weights keep their values: float32 files stay float32 (fp16 releases are widened exactly).
    """
    declared = _arch_config(spec, arch)
    sd, ckpt_hash, source, openai_file = _weights(spec, files, arch, seed, declared)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items() if k not in OPENAI_METADATA}
    shape = ClipFileShape.of(sd)
    if declared is not None and (wrong := shape.mismatches(declared[1])):
        raise CheckpointError(f"{source} does not fit {declared[0]}: {'; '.join(wrong)}")
    quick_gelu = _quick_gelu(spec, arch, declared, openai_file, source)
    spec = _file_spec(spec, shape, source)
    cfg = declared[1] if declared is not None else shape.config()
    if declared is None and (shape.width % 64 or shape.text_width % 64):
        raise CheckpointError(f"{source} has widths {shape.width}/{shape.text_width}, not multiples of OpenAI's 64-wide"
                              " attention heads, so its head counts are unknown; pass --arch <open_clip model name>")
    vision = cfg.get("vision_cfg") or {}
    image = clip_vit_from_state_dict(sd, quick_gelu, num_heads=shape.width // vision.get("head_width", 64))
    text = _text_tower(cfg, sd, quick_gelu, source)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=shape.context_length)
    return _finish(OpenClipBackbone(spec, image, text, tokenizer, device), ckpt_hash)


def _text_tower(cfg: dict, sd: StateDict, quick_gelu: bool, source: str) -> torch.nn.Module:
    """open_clip's CLIP text tower in float32 (no fp16 rounding), loaded strictly from the non-visual weights."""
    args = {k: copy.deepcopy(cfg[k]) for k in _CLIP_ARGS if k in cfg}
    if "logit_bias" in sd:
        args.setdefault("init_logit_bias", 0.0)
    # A minimal image tower: the timm one is used for images; this one is dropped before loading.
    args["vision_cfg"] = {"layers": 1, "width": 64, "head_width": 64, "patch_size": 16, "image_size": 32}
    model = _text_only(open_clip.model.CLIP(**args, quick_gelu=quick_gelu, cast_dtype=None))
    try:
        model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("visual.")}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit the text tower ({str(exc).splitlines()[-1].strip()})") from exc
    return model.float()


def _quiet(fn, *args, **kwargs):
    """Call an open_clip factory without its 'initialized randomly' warning (we asked for that)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return fn(*args, **kwargs)
    finally:
        logger.setLevel(level)


@register_family("siglip")
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
