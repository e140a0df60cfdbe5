"""TIPS and TIPSv2 (google-deepmind/tips) on timm's ViT.

The image tower is the DINOv2 ViT with the second CLS token as one register token: exactly
timm's ``vit_*_patch14_reg1_tipsv2`` once ``pos_embed[:, 0]`` is folded into the class token,
which timm's ``checkpoint_filter_fn`` (its DINOv2 converter) does. The architecture (width,
depth, MLP or SwiGLU hidden size, registers, patch size, position grid) is read from the
checkpoint; only the head count comes from the definition (default width / 64).
"""

from __future__ import annotations

import math
from pathlib import Path

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
    read_state_dict,
)
from tips_bench.backbones.spec import BackboneSpec
from tips_bench.backbones.tips_text import BundledBpeTokenizer, TipsTextEncoder, TipsTokenizer
from tips_bench.backbones.vit import TimmViTBackbone
from tips_bench.errors import CheckpointError, InputError


def tips_architecture(sd: StateDict) -> dict[str, int | str]:
    """Width, depth, FFN type and hidden size, registers, patch size and grid of a vision checkpoint.

    Reads the official ``*_vision.npz`` layout and timm's export of it (``reg_token``, patch-only
    ``pos_embed``, ``mlp.fc1``/``fc2``), e.g. a Hugging Face ``model.safetensors``.
    """
    width = sd["cls_token"].shape[-1]
    timm_layout = "reg_token" in sd  # timm / Hugging Face export: no class position, registers as reg_token
    swiglu = "blocks.0.mlp.w12.weight" in sd or (timm_layout and _is_swiglu(sd))
    hidden = sd["blocks.0.mlp.w12.weight" if "blocks.0.mlp.w12.weight" in sd else "blocks.0.mlp.fc1.weight"].shape[0]
    grid = math.isqrt(sd["pos_embed"].shape[1] - (0 if timm_layout else 1))
    regs = sd["reg_token"] if timm_layout else sd.get("register_tokens")
    return {
        "embed_dim": width,
        "depth": count_blocks(sd, "blocks."),
        "ffn": "swiglu" if swiglu else "mlp",
        "mlp_hidden": hidden,
        "reg_tokens": regs.shape[1] if regs is not None else 0,
        "patch_size": sd["patch_embed.proj.weight"].shape[-1],
        "grid": grid,
    }


def _is_swiglu(sd: StateDict) -> bool:
    """timm's packed SwiGLU: fc2 takes half of fc1's outputs."""
    return sd["blocks.0.mlp.fc2.weight"].shape[1] * 2 == sd["blocks.0.mlp.fc1.weight"].shape[0]


def _mlp_ratio(hidden: int, width: int) -> float:
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width  # guard float rounding


def build_tips_vit(arch: dict[str, int | str], num_heads: int) -> VisionTransformer:
    """A randomly initialised timm TIPS ViT of the given architecture, dynamic input size."""
    width = int(arch["embed_dim"])
    if num_heads < 1 or width % num_heads:
        raise InputError(f"--num-heads {num_heads} does not divide the image tower's width {width}; pass a divisor "
                         f"such as {max(1, width // 64)}")
    base = "vit_giant_patch14_reg1_tipsv2" if arch["ffn"] == "swiglu" else "vit_base_patch14_reg1_tipsv2"
    return timm.create_model(
        base,
        pretrained=False,
        img_size=int(arch["grid"]) * int(arch["patch_size"]),
        patch_size=int(arch["patch_size"]),
        embed_dim=int(arch["embed_dim"]),
        depth=int(arch["depth"]),
        num_heads=num_heads,
        mlp_ratio=_mlp_ratio(int(arch["mlp_hidden"]), int(arch["embed_dim"])),
        reg_tokens=int(arch["reg_tokens"]),
        num_classes=0,
        dynamic_img_size=True,
    )


def _nominal_architecture(spec: BackboneSpec) -> dict[str, int | str]:
    a = spec.architecture
    if not a.get("embed_dim"):
        raise CheckpointError(f"{spec.name} reads its architecture from a checkpoint; --random-init needs a sized "
                              "TIPS backbone such as tips_b14")
    width = int(a["embed_dim"])
    swiglu = a.get("ffn") == "swiglu"
    return {"embed_dim": width, "depth": int(a["depth"]), "ffn": a.get("ffn", "mlp"),
            "mlp_hidden": 8192 if swiglu else (4304 if width == 1152 else 4 * width),
            "reg_tokens": 1, "patch_size": spec.patch_size, "grid": spec.native_resolution // spec.patch_size}


def _check_variant(spec: BackboneSpec, arch: dict[str, int | str], path: Path, sd: StateDict) -> None:
    expected = {k: spec.architecture.get(k) for k in ("embed_dim", "depth", "ffn")}
    wrong = {k: (v, arch[k]) for k, v in expected.items() if v is not None and arch[k] != v}
    if wrong:
        want = ", ".join(f"{k} {v[0]}" for k, v in wrong.items())
        raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not {spec.name} ({want}); "
                              "pass the matching --backbone or that backbone's file")


def _global_fn(model: VisionTransformer, final: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"cls1": final[:, 0], "cls2": final[:, 1]}


class TipsBackbone(TimmViTBackbone):
    """TIPS image tower (timm) plus a lazily loaded text tower and tokenizer."""

    def __init__(self, spec: BackboneSpec, model: VisionTransformer, files: CheckpointFiles | None,
                 device: str | torch.device = "cpu", text: TipsTextEncoder | None = None,
                 tokenizer: TipsTokenizer | None = None, temperature: float | None = None):
        super().__init__(spec, model, _global_fn, device, global_names=("cls1", "cls2"))
        self.files = files
        self._text, self._tokenizer, self._temperature = text, tokenizer, temperature
        self.text_num_heads: int | None = None
        self.init_seed = 0

    def _load_text(self) -> None:
        if self._text is not None:
            return
        if self.files is None:
            self._random_text()
            return
        text_path = self.files.require("text")
        sd = read_state_dict(text_path)
        if guess_family(sd) != "tips_text":
            raise CheckpointError(f"{text_path} is {describe_state_dict(sd)}, not a TIPS text tower (*_text.npz)")
        self._temperature = float(sd["temperature"]) if "temperature" in sd else None
        heads = self.text_num_heads or self.spec.architecture.get("text_num_heads")
        self._text = TipsTextEncoder.from_state_dict(sd, heads).to(self.device)
        self._tokenizer = TipsTokenizer(self.files.require("tokenizer"))

    def _random_text(self) -> None:
        """A seeded random text tower of the released shape for this width (``--random-init``)."""
        width = self.embed_dim
        layers, mlp = (27, 4304) if width == 1152 else (12, 4 * width)
        heads = self.text_num_heads or self.spec.architecture.get("text_num_heads") or max(1, width // 64)
        generator_state = torch.get_rng_state()
        torch.manual_seed(self.init_seed + 1)
        self._text = TipsTextEncoder(BundledBpeTokenizer.vocab_size, width, layers, int(heads), mlp).eval()
        torch.set_rng_state(generator_state)
        self._text.to(self.device)
        self._tokenizer = BundledBpeTokenizer()
        self._temperature = 0.01

    @property
    def text_dim(self) -> int:  # type: ignore[override]
        self._load_text()
        return self._text.width

    def tokenize(self, texts: list[str]):
        """(ids, paddings) int64 arrays (B, 64), as the TIPS text tower expects."""
        self._load_text()
        return self._tokenizer(texts)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        ids, paddings = self.tokenize(texts)
        return self._text(torch.from_numpy(ids).to(self.device), torch.from_numpy(paddings).to(self.device))

    @property
    def logit_scale(self) -> float:
        self._load_text()
        return 1.0 / self._temperature if self._temperature else 100.0


@register_family("tips")
def load_tips(spec: BackboneSpec, files: CheckpointFiles | None, device: str, num_heads: int | None = None,
              text_num_heads: int | None = None, seed: int = 0) -> TipsBackbone:
    """Build a TIPS backbone from its ``*_vision.npz`` (or randomly when ``files`` is None)."""
    heads_from_spec = spec.architecture.get("num_heads")
    if files is None:
        arch = _nominal_architecture(spec)
        torch.manual_seed(seed)
        model = build_tips_vit(arch, num_heads or int(heads_from_spec or int(arch["embed_dim"]) // 64))
        backbone = TipsBackbone(spec, model, None, device)
        backbone.text_num_heads, backbone.init_seed = text_num_heads, seed
        return backbone
    path = files.require("vision")
    sd = read_state_dict(path)
    timm_export = guess_family(sd) == "timm_vit" and "reg_token" in sd and sd["reg_token"].shape[1] == 1
    if guess_family(sd) != "tips_vision" and not timm_export:
        raise CheckpointError(f"{path} is {describe_state_dict(sd)}, not a TIPS vision tower (*_vision.npz); "
                              "pass the *_vision.npz file of the release")
    arch = tips_architecture(sd)
    _check_variant(spec, arch, path, sd)
    heads = num_heads or int(heads_from_spec or int(arch["embed_dim"]) // 64)
    model = build_tips_vit(arch, heads)
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    backbone = TipsBackbone(spec, model, files, device)
    backbone.text_num_heads = text_num_heads
    backbone.checkpoint_hash = file_hash(path)
    return backbone
