"""DINOv2, OpenAI CLIP and SigLIP loaders against independent references, from files in the original formats.

Tiny random models (width 64-128, 2 blocks) stand in for the releases: their weights are perturbed so
every tensor matters, written in each family's release format (DINOv2 ``.pth`` state dict, OpenAI
TorchScript ``.pt`` in float16, open_clip ``.safetensors``), registered as extra backbone definitions
through ``TIPS_BENCH_PATH`` and loaded with :func:`load_backbone`. References:

* DINOv2 and SigLIP (image and text towers): the plain-torch forward passes of
  ``tests/reference_models.py``, written from the original architecture definitions (hub DINOv2,
  big_vision SigLIP, whose MLPs use the tanh approximation of GELU).
* OpenAI CLIP: open_clip's ``CLIP``, the port of OpenAI's ``clip/model.py`` (independent of timm, which
  tips-bench uses for the image tower).
"""

from __future__ import annotations

import copy
import json
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml
from reference_models import dinov2_forward, random_dinov2_state_dict, siglip_forward, siglip_text_forward
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from tips_bench.backbones import load_backbone

TOL = 1e-4
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
OPENAI = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

DINO_GRID = 16  # position embeddings for 16 x 14 = 224 px (the hub releases: 37 x 14 = 518)
DINO_SIZES = [(224, 224), (308, 308), (168, 252)]  # native, larger, non-square (12 x 18 patches)
CLIP_SIZES = [(64, 64), (96, 80)]
SIGLIP_SIZES = [(64, 64), (96, 80), (48, 64)]
SIGLIP_TIMM = "vit_tiny_patch16_siglip_64_tipsbench_test"
SIGLIP_OPEN_CLIP = "TipsBenchTest-SigLIP-tiny"
TEXTS = ["a photo of a cat", "a photo of a dog", "", "an extremely long caption " * 20]


@register_model
def vit_tiny_patch16_siglip_64_tipsbench_test(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """SigLIP-shaped timm trunk (same constructor arguments as ``vit_so400m_patch14_siglip_224``), tiny."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    args = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=3.75,
                class_token=False, global_pool="map")
    return VisionTransformer(**{**args, **kwargs})


def _definition(name: str, family: str, architecture: dict, native: int, patch: int, norm: dict, interp: str,
                default_global: str, capabilities: list[str], files: dict[str, str]) -> dict:
    return {"name": name, "family": family, "version": 1, "description": f"test-only {family}",
            "architecture": architecture, "native_resolution": native, "patch_size": patch,
            "normalization": norm, "pos_embed_interpolation": interp, "prefix_tokens": [],
            "default_global": default_global, "capabilities": capabilities, "dense_layers": [0, 1],
            "checkpoint": {"files": files}}


def _dinov2_arch(registers: int) -> dict:
    timm_name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    return {"timm_name": timm_name, "embed_dim": 64, "depth": 2, "num_heads": 2, "registers": registers}


TIMM_INTERP = "timm_bicubic_antialias"
IMAGE, TEXT = ["image_global", "dense"], ["image_global", "dense", "text"]
DEFINITIONS = [
    _definition("dinov2_tiny", "dinov2", _dinov2_arch(0), 224, 14, IMAGENET, "dinov2_offset", "cls", IMAGE,
                {"vision": "dinov2_tiny.pth"}),
    _definition("dinov2_tiny_timm_interp", "dinov2", _dinov2_arch(0), 224, 14, IMAGENET, TIMM_INTERP, "cls",
                IMAGE, {"vision": "dinov2_tiny.pth"}),
    _definition("dinov2_tiny_reg", "dinov2", _dinov2_arch(4), 224, 14, IMAGENET, TIMM_INTERP, "cls", IMAGE,
                {"vision": "dinov2_tiny_reg.pth"}),
    _definition("clip_tiny", "clip", {"quick_gelu": True}, 64, 16, OPENAI, TIMM_INTERP, "embedding", TEXT,
                {"model": "clip_tiny.pt"}),
    _definition("siglip_tiny", "siglip", {"open_clip_name": SIGLIP_OPEN_CLIP}, 64, 16, HALF, TIMM_INTERP,
                "embedding", TEXT, {"model": "siglip_tiny.safetensors"}),
]

SIGLIP_CONFIG = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 64, "timm_model_name": SIGLIP_TIMM, "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 64, "heads": 2, "layers": 1,
                 "mlp_ratio": 4, "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
                 "norm_kwargs": {"eps": 1e-6}},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A TIPS_BENCH_PATH folder with the tiny definitions, plus the open_clip config of the tiny SigLIP."""
    root = tmp_path_factory.mktemp("tiny_backbones")
    (root / "backbones").mkdir()
    for definition in DEFINITIONS:
        (root / "backbones" / f"{definition['name']}.yaml").write_text(yaml.safe_dump(definition))
    (root / "open_clip").mkdir()
    (root / "open_clip" / f"{SIGLIP_OPEN_CLIP}.json").write_text(json.dumps(SIGLIP_CONFIG))
    open_clip.add_model_config(root / "open_clip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIPS_BENCH_PATH", str(root))
        yield root


def _pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + height * 1000 + width)
    return torch.rand(2, 3, height, width, generator=generator)


def _normalise(pixels: torch.Tensor, norm: dict) -> torch.Tensor:
    mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def _perturb_(model: torch.nn.Module, seed: int) -> None:
    """Replace every weight by random values of a useful scale (norm weights ~1, biases and tokens random)."""
    g = torch.Generator().manual_seed(seed)
    tokens = ("class_embedding", "positional_embedding", "pos_embed", "latent", "token_embedding")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "logit_" in name:
                continue
            noise = torch.randn(p.shape, generator=g)
            if any(t in name for t in tokens):
                p.copy_(0.5 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * p[0].numel() ** -0.5)


# --------------------------------------------------------------------------------------------- DINOv2


@pytest.fixture(scope="module")
def dinov2_files(root):
    files = {}
    for name, registers, seed in (("dinov2_tiny", 0, 1), ("dinov2_tiny_reg", 4, 2)):
        sd = random_dinov2_state_dict(embed_dim=64, depth=2, grid=DINO_GRID, registers=registers, seed=seed)
        path = root / f"{name}.pth"
        torch.save(sd, path)
        files[name] = (path, sd)
    return files


@pytest.mark.parametrize("name", ["dinov2_tiny", "dinov2_tiny_reg"])
@pytest.mark.parametrize("size", DINO_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dinov2_matches_reference(dinov2_files, name, size):
    path, sd = dinov2_files[name]
    backbone = load_backbone(name, checkpoint=path)
    pixels = _pixels(*size)
    feats = backbone.encode_image(pixels, layers=[0, 1])
    ref = dinov2_forward(sd, _normalise(pixels, IMAGENET), num_heads=2, layers=(0, 1))
    assert feats.patches[1].shape == (2, 64, size[0] // 14, size[1] // 14)
    assert _max_diff(feats.globals["cls"], ref["cls"]) <= TOL
    assert _max_diff(feats.patches[1], ref["patches"]) <= TOL
    assert _max_diff(feats.patches[0], ref["layers"][0]) <= TOL


@pytest.mark.parametrize("name", ["dinov2_tiny", "dinov2_tiny_reg"])
def test_dinov2_timm_safetensors_export_matches_reference(dinov2_files, name, tmp_path):
    """timm's export of the weights (timm key names, .safetensors, as on the Hugging Face hub) loads too."""
    from safetensors.torch import save_file

    path, sd = dinov2_files[name]
    exported = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in load_backbone(name, checkpoint=path).model.state_dict().items()},
              str(exported))
    pixels = _pixels(*DINO_SIZES[-1])
    feats = load_backbone(name, checkpoint=exported).encode_image(pixels)
    ref = dinov2_forward(sd, _normalise(pixels, IMAGENET), num_heads=2)
    assert _max_diff(feats.patches[1], ref["patches"]) <= TOL


@pytest.mark.parametrize("size", DINO_SIZES[1:], ids=lambda s: f"{s[0]}x{s[1]}")
def test_dinov2_offset_formula_matters(dinov2_files, size):
    """timm's default resampling (bicubic, antialias, size-driven) is far from the hub's no-register rule."""
    path, sd = dinov2_files["dinov2_tiny"]
    backbone = load_backbone("dinov2_tiny_timm_interp", checkpoint=path)
    pixels = _pixels(*size)
    feats = backbone.encode_image(pixels)
    ref = dinov2_forward(sd, _normalise(pixels, IMAGENET), num_heads=2)
    assert _max_diff(feats.patches[1], ref["patches"]) > 1e-3
    assert _max_diff(feats.globals["cls"], ref["cls"]) > 1e-3


# --------------------------------------------------------------------------------------------- OpenAI CLIP


def _tiny_clip() -> open_clip.model.CLIP:
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=128, patch_size=16, image_size=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1,
                                             layers=2),
        quick_gelu=True,
    )
    _perturb_(model, seed=3)
    return model.half().float().eval()  # the release files are float16: keep values that survive the cast


def _save_openai_torchscript(model: open_clip.model.CLIP, path) -> None:
    """Write the model as OpenAI did: a traced TorchScript archive, float16, OpenAI's parameter names."""
    scripted = copy.deepcopy(model)
    # OpenAI's attention mask is a plain attribute (not in the state dict); open_clip's is a buffer.
    mask = scripted._buffers.pop("attn_mask")
    scripted.attn_mask = mask
    images = torch.zeros(1, 3, 64, 64)
    texts = open_clip.tokenizer.tokenize(["a diagram"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            scripted, {"forward": (images, texts), "encode_image": (images,), "encode_text": (texts,)},
            check_trace=False)
    torch.jit.save(traced.half(), str(path))


@pytest.fixture(scope="module")
def clip_case(root):
    model = _tiny_clip()
    path = root / "clip_tiny.pt"
    _save_openai_torchscript(model, path)
    return path, model


def test_clip_file_is_an_openai_torchscript_archive(clip_case):
    path, model = clip_case
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(path, weights_only=True)
    sd = torch.jit.load(str(path)).state_dict()
    assert set(sd) == set(model.state_dict())
    assert {"visual.conv1.weight", "visual.class_embedding", "text_projection", "logit_scale"} <= set(sd)
    assert sd["visual.conv1.weight"].dtype == torch.float16


@pytest.mark.parametrize("size", CLIP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_clip_image_matches_open_clip(clip_case, size):
    path, model = clip_case
    backbone = load_backbone("clip_tiny", checkpoint=path)
    pixels = _pixels(*size)
    x = _normalise(pixels, OPENAI)
    rows, cols = size[0] // 16, size[1] // 16
    ref = copy.deepcopy(model.visual)
    if (rows, cols) != (4, 4):  # open_clip's load-time resampling rule (resize_pos_embed): bicubic, antialias
        pos = ref.positional_embedding.data
        grid = pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(rows * cols, -1)
        ref.positional_embedding.data = torch.cat([pos[:1], grid])
    ref.output_tokens = True
    with torch.no_grad():
        embedding, tokens = ref(x)
        inter = ref.forward_intermediates(x, indices=[0], normalize_intermediates=True,
                                          intermediates_only=True)
    feats = backbone.encode_image(pixels, layers=[0, 1])
    assert _max_diff(feats.globals["embedding"], embedding) <= TOL
    assert _max_diff(feats.patches[1], tokens.transpose(1, 2).reshape(2, -1, rows, cols)) <= TOL
    assert _max_diff(feats.patches[0], inter["image_intermediates"][0]) <= TOL


def test_clip_text_and_logit_scale_match_open_clip(clip_case):
    path, model = clip_case
    backbone = load_backbone("clip_tiny", checkpoint=path)
    with torch.no_grad():
        ref = model.encode_text(open_clip.tokenizer.tokenize(TEXTS))
    assert _max_diff(backbone.encode_text(TEXTS), ref) <= TOL
    assert abs(backbone.logit_scale - float(model.logit_scale.detach().exp())) <= TOL
    assert backbone.text_dim == 32


# --------------------------------------------------------------------------------------------- SigLIP


@pytest.fixture(scope="module")
def siglip_case(root):
    torch.manual_seed(0)
    model = open_clip.create_model(SIGLIP_OPEN_CLIP, pretrained=None)
    _perturb_(model, seed=4)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = root / "siglip_tiny.safetensors"
    save_file(sd, str(path))
    trunk = {k.removeprefix("visual.trunk."): v for k, v in sd.items() if k.startswith("visual.trunk.")}
    return path, trunk, sd


def test_siglip_file_is_an_open_clip_release_layout(siglip_case):
    _, trunk, sd = siglip_case
    assert "attn_pool.latent" in trunk and "pos_embed" in trunk and "cls_token" not in trunk
    assert any(k.startswith("text.") for k in sd) and "logit_bias" in sd


@pytest.mark.parametrize("size", SIGLIP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_siglip_image_matches_reference(siglip_case, size):
    path, trunk, _ = siglip_case
    backbone = load_backbone("siglip_tiny", checkpoint=path)
    pixels = _pixels(*size)
    feats = backbone.encode_image(pixels, layers=[0, 1])
    ref = siglip_forward(trunk, _normalise(pixels, HALF), num_heads=2, patch=16, layers=(0, 1))
    assert feats.patches[1].shape == (2, 64, size[0] // 16, size[1] // 16)
    assert _max_diff(feats.globals["embedding"], ref["embedding"]) <= TOL
    assert _max_diff(feats.patches[1], ref["patches"]) <= TOL
    assert _max_diff(feats.patches[0], ref["layers"][0]) <= TOL


def test_siglip_logit_scale(siglip_case):
    path, _, sd = siglip_case
    backbone = load_backbone("siglip_tiny", checkpoint=path)
    assert abs(backbone.logit_scale - float(sd["logit_scale"].exp())) <= 1e-5


def test_siglip_text_tower_matches_reference(siglip_case):
    """The text tower read from the file (token ids given directly: the tokenizer files are not bundled)."""
    path, _, sd = siglip_case
    backbone = load_backbone("siglip_tiny", checkpoint=path)
    ids = torch.randint(0, 1000, (3, 16), generator=torch.Generator().manual_seed(5))
    text = {k.removeprefix("text."): v for k, v in sd.items() if k.startswith("text.")}
    with torch.no_grad():
        emb = backbone.text_model.encode_text(ids)
    assert _max_diff(emb, siglip_text_forward(text, ids, num_heads=2)) <= TOL
