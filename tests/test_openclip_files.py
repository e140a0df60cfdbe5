"""The generic ``openclip`` backbone reads its architecture from the file, or refuses the file.

Tiny CLIP ViTs built with open_clip itself (``open_clip.model.CLIP`` from a config dict, as the
``tiny_clip`` definition's ``open_clip_config`` does) are saved the way the releases are:

* a patch-32 open_clip state dict (GELU, 32-wide heads: needs ``--arch``, registered with
  ``open_clip.add_model_config``): the dense map is (B, D, H/32, W/32), not a patch-16 reshape;
* a float32 state dict in OpenAI's key layout with OpenAI's metadata keys, loaded without
  ``--arch``: QuickGELU, 64-wide heads, and no float16 rounding of the text tower.

The reference is the open_clip model itself run in float32; parity to 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tips_bench.backbones import get_backbone_spec, load_backbone, resolve_backbone_spec
from tips_bench.cli import main
from tips_bench.errors import TipsBenchError

TOL = 1e-5
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
TEXTS = ["a photo of a cat", "a diagram", ""]
TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}
B32 = "TipsBenchTest-openclip-B32"  # GELU, two 32-wide heads: only --arch can say so
B32_CFG = {"embed_dim": 32, "text_cfg": TEXT_CFG,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32}}
B16_QUICK = "TipsBenchTest-openclip-B16-quickgelu"
B16_QUICK_CFG = {**B32_CFG, "quick_gelu": True,
                 "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16}}
# OpenAI's conventions (64-wide heads), patch 16 at 64 px: readable from the file alone.
OPENAI_CFG = {"embed_dim": 32, "text_cfg": {**TEXT_CFG, "heads": 1},
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16}}
OPENAI_GELU = "TipsBenchTest-openclip-openai-gelu"


@pytest.fixture(scope="module", autouse=True)
def arch_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, cfg in [(B32, B32_CFG), (B16_QUICK, B16_QUICK_CFG), (OPENAI_GELU, OPENAI_CFG)]:
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def _model(cfg: dict, quick_gelu: bool, seed: int) -> open_clip.model.CLIP:
    """An open_clip CLIP from a config dict, every weight randomised to a useful scale."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**{k: v for k, v in cfg.items() if k != "quick_gelu"}, quick_gelu=quick_gelu)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "logit_scale" in name:
                continue
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if name.endswith(("ln_pre.weight", "ln_post.weight", "ln_final.weight",
                                                       "ln_1.weight", "ln_2.weight")) else 0.05 * noise)
    return model.eval()


def _pixels(height: int, width: int) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))


def _reference(model: open_clip.model.CLIP, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image embedding, normed patch tokens (B, D, h, w), text embedding) from open_clip in float32."""
    visual = model.visual
    visual.output_tokens = True
    with torch.no_grad():
        embedding, tokens = visual((pixels - OPENAI_MEAN) / OPENAI_STD)
        text = model.encode_text(open_clip.tokenizer.tokenize(TEXTS, context_length=model.context_length))
    visual.output_tokens = False
    rows, cols = pixels.shape[-2] // visual.patch_size[0], pixels.shape[-1] // visual.patch_size[1]
    return embedding, tokens.transpose(1, 2).reshape(pixels.shape[0], -1, rows, cols), text


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def b32_case(tmp_path_factory):
    model = _model(B32_CFG, quick_gelu=False, seed=1)
    path = tmp_path_factory.mktemp("b32") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def openai_case(tmp_path_factory):
    model = _model(OPENAI_CFG, quick_gelu=True, seed=2)
    sd = dict(model.state_dict())
    sd |= {"input_resolution": torch.tensor(64), "context_length": torch.tensor(16), "vocab_size": torch.tensor(49408)}
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    path = tmp_path_factory.mktemp("openai") / "ViT-tiny-16.pt"
    torch.save(sd, path)
    return path, model


def test_patch32_file_gives_a_patch32_grid_and_matches_open_clip(b32_case):
    path, model = b32_case
    backbone = load_backbone("openclip", checkpoint=path, arch=B32)
    assert (backbone.patch_size, backbone.spec.native_resolution) == (32, 64)
    pixels = _pixels(64, 64)
    embedding, tokens, text = _reference(model, pixels)
    feats = backbone.encode_image(pixels)
    assert feats.patches[1].shape == (2, 64, 2, 2)
    assert _diff(feats.globals["embedding"], embedding) <= TOL
    assert _diff(feats.patches[1], tokens) <= TOL
    assert _diff(backbone.encode_text(TEXTS), text) <= TOL
    assert backbone.encode_image(_pixels(128, 64)).patches[1].shape == (2, 64, 4, 2)


def test_runner_and_features_cli_see_the_files_patch_size(b32_case, tmp_path):
    path, _ = b32_case
    spec = resolve_backbone_spec(get_backbone_spec("openclip"), path, B32)
    assert (spec.patch_size, spec.native_resolution) == (32, 64)
    assert resolve_backbone_spec(get_backbone_spec("openclip"), None, B16_QUICK, random_init=True).patch_size == 16
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "f.npz"
    assert main(["features", "--backbone", "openclip", "--checkpoint", str(path), "--arch", B32,
                 "--out", str(out), str(image)]) == 0
    with np.load(out) as data:
        assert data["patches"].shape == (1, 64, 2, 2)
        assert tuple(data["image_size"]) == (64, 64)


def test_fp32_openai_layout_without_arch_is_quickgelu_and_stays_fp32(openai_case):
    path, model = openai_case
    backbone = load_backbone("openclip", checkpoint=path)
    assert (backbone.patch_size, backbone.spec.native_resolution) == (16, 64)
    pixels = _pixels(64, 64)
    embedding, tokens, text = _reference(model, pixels)
    feats = backbone.encode_image(pixels)
    assert feats.patches[1].shape == (2, 128, 4, 4)
    assert _diff(feats.globals["embedding"], embedding) <= TOL
    assert _diff(feats.patches[1], tokens) <= TOL
    assert _diff(backbone.encode_text(TEXTS), text) <= TOL
    assert all(p.dtype == torch.float32 for p in backbone.text_model.parameters())
    # The test sees both faults: GELU in place of QuickGELU, and open_clip's float16 build of the text tower.
    gelu = _model(OPENAI_CFG, quick_gelu=False, seed=2)
    gelu.load_state_dict(model.state_dict())
    assert _diff(_reference(gelu, pixels)[0], embedding) > 1e-3
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    rounded = open_clip.model.build_model_from_openai_state_dict(sd, cast_dtype=None).float()
    with torch.no_grad():
        tokens_in = open_clip.tokenizer.tokenize(TEXTS, context_length=16)
        assert _diff(rounded.encode_text(tokens_in), text) > 1e-5


def test_file_contradicting_arch_is_refused_with_one_sentence(b32_case, tmp_path, capsys):
    path, _ = b32_case
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(image)
    code = main(["features", "--backbone", "openclip", "--checkpoint", str(path), "--arch", B16_QUICK,
                 "--out", str(tmp_path / "f.npz"), str(image)])
    assert code == 2
    err = capsys.readouterr().err
    assert "patch size 32 where it says 16" in err and f"--arch {B16_QUICK}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.npz").exists()


def test_openai_release_with_a_gelu_arch_is_refused(openai_case):
    path, _ = openai_case
    with pytest.raises(TipsBenchError, match="OpenAI CLIP release .*QuickGELU"):
        load_backbone("openclip", checkpoint=path, arch=OPENAI_GELU)


def test_named_definition_refuses_a_file_of_another_shape(b32_case):
    path, _ = b32_case
    with pytest.raises(TipsBenchError, match="does not fit clip_b16"):
        load_backbone("clip_b16", checkpoint=path)
