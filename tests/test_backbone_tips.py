"""TIPS loaders against reference outputs of the official google-deepmind/tips code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tips_bench.backbones import load_backbone
from tips_bench.backbones.formats import read_state_dict
from tips_bench.backbones.tips import tips_architecture
from tips_bench.backbones.tips_text import TipsTokenizer, ascii_lower, sinusoidal_positions
from tips_bench.errors import CapabilityError, CheckpointError, InputError

SIZES = ["224x224", "448x448", "280x392", "518x322"]
TOL = 1e-4


@pytest.fixture(scope="module")
def vision_ref(tips_files):
    with np.load(tips_files["vision_ref"]) as data:
        return {k: data[k] for k in data.files}


def test_architecture_is_read_from_the_checkpoint(tips_files, tips_config):
    arch = tips_architecture(read_state_dict(tips_files["vision"]))
    v = tips_config["vision"]
    assert arch == {"embed_dim": v["embed_dim"], "depth": v["depth"], "ffn": "mlp", "mlp_hidden": 4 * v["embed_dim"],
                    "reg_tokens": 1, "patch_size": v["patch_size"], "grid": v["grid"]}


@pytest.mark.parametrize("size", SIZES)
def test_cls_tokens_and_patches_match_official_code(tips_fixture_backbone, vision_ref, size):
    pixels = torch.from_numpy(vision_ref[f"input_{size}"]).float() / 255.0
    feats = tips_fixture_backbone.encode_image(pixels)
    last = tips_fixture_backbone.num_layers - 1
    h, w = (int(s) // 14 for s in size.split("x"))
    patches = feats.patches[last]
    assert patches.shape[-2:] == (h, w)
    np.testing.assert_allclose(feats.globals["cls1"], vision_ref[f"cls1_{size}"][:, 0], atol=TOL, rtol=0)
    np.testing.assert_allclose(feats.globals["cls2"], vision_ref[f"cls2_{size}"][:, 0], atol=TOL, rtol=0)
    np.testing.assert_allclose(patches.flatten(2).transpose(1, 2), vision_ref[f"patch_{size}"], atol=TOL, rtol=0)


def test_every_layer_matches_official_code(tips_fixture_backbone, vision_ref):
    pixels = torch.from_numpy(vision_ref["input_224x224"]).float() / 255.0
    depth = tips_fixture_backbone.num_layers
    feats = tips_fixture_backbone.encode_image(pixels, layers=list(range(depth)))
    layers = np.stack([feats.patches[i].numpy() for i in range(depth)])
    np.testing.assert_allclose(layers, vision_ref["layers_224x224"], atol=TOL, rtol=0)


def test_timm_default_interpolation_would_not_match(tips_fixture_backbone, vision_ref):
    """The bilinear+antialias override is what makes non-native sizes match."""
    from tips_bench.backbones.tips import build_tips_vit

    sd = read_state_dict(tips_fixture_backbone.files.require("vision"))
    plain = build_tips_vit(tips_architecture(sd), 2)
    from timm.models.vision_transformer import checkpoint_filter_fn

    plain.load_state_dict(checkpoint_filter_fn(sd, plain))
    pixels = torch.from_numpy(vision_ref["input_448x448"]).float() / 255.0
    with torch.no_grad():
        tokens = plain.forward_features(pixels)[:, 2:]
    assert (tokens - torch.from_numpy(vision_ref["patch_448x448"])).abs().max() > 1e-3


def test_tokenizer_matches_official_ids_and_paddings(tips_files, tips_config):
    with np.load(tips_files["text_ref"]) as ref:
        ids, paddings = TipsTokenizer(tips_files["tokenizer"])(tips_config["texts"])
        np.testing.assert_array_equal(ids, ref["ids"])
        np.testing.assert_array_equal(paddings, ref["paddings"])
    assert paddings[3].sum() == 0  # the long text is cut at 64 tokens and has no padding
    assert paddings[2].sum() == 64  # the empty text is all padding


def test_text_embeddings_match_official_code(tips_fixture_backbone, tips_files, tips_config):
    with np.load(tips_files["text_ref"]) as ref:
        emb = tips_fixture_backbone.encode_text(tips_config["texts"])
        np.testing.assert_allclose(emb, ref["embeddings"], atol=TOL, rtol=0)
    with np.load(tips_files["text"]) as text:
        assert tips_fixture_backbone.logit_scale == pytest.approx(1.0 / float(text["temperature"]))


def test_text_embedding_does_not_depend_on_batch(tips_fixture_backbone, tips_config):
    texts = tips_config["texts"]
    alone = torch.cat([tips_fixture_backbone.encode_text([t]) for t in texts])
    np.testing.assert_allclose(alone, tips_fixture_backbone.encode_text(texts), atol=1e-5)


def test_ascii_only_lowercasing():
    assert ascii_lower("ÉCOLE Über ABC") == "École Über abc"


def test_sinusoidal_positions_hand_values():
    pos = sinusoidal_positions(3, 4)[0]
    # timescales for dim 4: 1 and 1e4 -> inv 1 and 1e-4; position 2: sin(2), sin(2e-4), cos(2), cos(2e-4)
    np.testing.assert_allclose(pos[2], [np.sin(2), np.sin(2e-4), np.cos(2), np.cos(2e-4)], atol=1e-6)


def test_values_trick_features_have_text_width(tips_fixture_backbone, vision_ref):
    pixels = torch.from_numpy(vision_ref["input_224x224"]).float() / 255.0
    feats = tips_fixture_backbone.encode_image(pixels, text_dense=True)
    assert feats.text_dense.shape == (2, 128, 16, 16)
    assert not torch.allclose(feats.text_dense, feats.patches[tips_fixture_backbone.num_layers - 1])


def test_wrong_variant_names_what_the_file_is(tips_files):
    with pytest.raises(CheckpointError, match="TIPS vision tower of width 128 with 3 blocks, not tips_l14"):
        load_backbone("tips_l14", checkpoint=tips_files["vision"])


def test_wrong_family_file(tips_files):
    with pytest.raises(CheckpointError, match="TIPS text tower.*not a TIPS vision tower"):
        load_backbone("tips", checkpoint=tips_files["text"])
    with pytest.raises(CheckpointError, match="not dinov2_s14"):
        load_backbone("dinov2_s14", checkpoint=tips_files["vision"])


def test_missing_checkpoint_names_file_and_url(monkeypatch, tmp_path):
    monkeypatch.setenv("TIPS_BENCH_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("TIPS_BENCH_CONFIG", str(tmp_path / "none.yaml"))
    with pytest.raises(CheckpointError) as err:
        load_backbone("tips_l14")
    msg = str(err.value)
    assert "tips_oss_l14_highres_distilled_vision.npz" in msg
    assert "https://storage.googleapis.com/tips_data/v1_0/checkpoints/pytorch/" in msg
    assert str(tmp_path) in msg


def test_checkpoint_folder_from_config_file(monkeypatch, tmp_path, tips_files):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "vision.npz").write_bytes(tips_files["vision"].read_bytes())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"checkpoint_dirs: [{folder}]\n")
    monkeypatch.setenv("TIPS_BENCH_CONFIG", str(cfg))
    monkeypatch.delenv("TIPS_BENCH_CHECKPOINTS", raising=False)
    backbone = load_backbone("tips", num_heads=2)
    assert backbone.checkpoint_hash and backbone.num_layers == 3


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "x_vision.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_backbone("tips", checkpoint=bad)


def test_bad_sizes_and_capabilities(tips_fixture_backbone):
    with pytest.raises(InputError, match="not a multiple of .* patch size 14"):
        tips_fixture_backbone.encode_image(torch.zeros(1, 3, 225, 224))
    with pytest.raises(InputError, match="layer 7 does not exist"):
        tips_fixture_backbone.encode_image(torch.zeros(1, 3, 224, 224), layers=[7])
    pixels = load_backbone("pixels")
    with pytest.raises(CapabilityError, match="image-only backbone and cannot encode text"):
        pixels.encode_text(["a cat"])


def test_random_init_is_seeded():
    a = load_backbone("tips_s14", random_init=True, seed=3)
    b = load_backbone("tips_s14", random_init=True, seed=3)
    x = torch.rand(1, 3, 28, 42)
    assert torch.equal(a.encode_image(x).globals["cls1"], b.encode_image(x).globals["cls1"])
    assert a.embed_dim == 384 and a.num_layers == 12
    # random-init text: seeded tower, bundled BPE tokenizer (no download)
    torch.testing.assert_close(a.encode_text(["a red cube"]), b.encode_text(["a red cube"]))
    assert a.encode_text(["a red cube", ""]).shape == (2, 384)


def test_timm_safetensors_export_loads_to_the_same_features(tmp_path, tips_fixture_backbone, vision_ref):
    """A timm / Hugging Face export (timm key names, .safetensors) of the same weights gives the same outputs."""
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tips_fixture_backbone.model.state_dict().items()}, str(path))
    exported = load_backbone("tips", checkpoint=path, num_heads=2)
    pixels = torch.from_numpy(vision_ref["input_280x392"]).float() / 255.0
    a, b = exported.encode_image(pixels), tips_fixture_backbone.encode_image(pixels)
    torch.testing.assert_close(a.globals["cls2"], b.globals["cls2"])
    torch.testing.assert_close(a.patches[2], b.patches[2])
