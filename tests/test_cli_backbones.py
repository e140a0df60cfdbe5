"""The 'backbones' and 'features' subcommands, run as a user would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tips_bench.cli import main


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(100, 120), (60, 50), (224, 224)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_backbones_table_lists_every_named_backbone(capsys):
    assert main(["backbones", "--width", "220"]) == 0
    out = capsys.readouterr().out
    for name in ["tips_s14", "tips_b14", "tips_l14", "tips_so400m14", "tips_g14", "tips_g14_lr", "tipsv2_b14",
                 "tipsv2_l14", "tipsv2_so400m14", "tipsv2_g14", "dinov2_s14", "dinov2_g14_reg", "clip_b16",
                 "clip_l14", "clip_l14_336", "siglip_so400m14", "siglip_so400m14_384", "pixels", "openclip"]:
        assert name in out


def test_features_match_the_library(images, tmp_path, tips_files, tips_fixture_backbone):
    out = tmp_path / "feats.npz"
    code = main(["features", "--backbone", "tips", "--checkpoint", str(tips_files["vision"]), "--num-heads", "2",
                 "--image-size", "112x140", "--layers", "0", "--out", str(out), *images])
    assert code == 0
    with np.load(out) as data:
        assert data["global_cls1"].shape == (3, 128)
        assert data["patches"].shape == (3, 128, 8, 10)
        assert data["patches_layer0"].shape == (3, 128, 8, 10)
        assert list(data["image_paths"]) == images
        from tips_bench.images import load_image, to_tensor

        expected = tips_fixture_backbone.encode_image(to_tensor([load_image(p, (112, 140)) for p in images]))
        np.testing.assert_allclose(data["global_cls2"], expected.globals["cls2"], atol=1e-5)


def test_features_random_init_without_network(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "f.npz"
    assert main(["features", "--backbone", "dinov2_s14", "--random-init", "--image-size", "56", "--out", str(out),
                 *images]) == 0
    with np.load(out) as data:
        assert data["global_cls"].shape == (3, 384) and data["patches"].shape == (3, 384, 4, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "225"], "not a multiple of"),
        (["--layers", "a,b"], "not a comma-separated list"),
    ],
)
def test_features_bad_input_exits_nonzero_and_writes_nothing(images, tmp_path, capsys, argv, message):
    out = tmp_path / "f.npz"
    code = main(["features", "--backbone", "pixels", "--out", str(out), *argv, *images])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".f.npz*"))


def test_unreadable_image(tmp_path, capsys, images):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    out = tmp_path / "f.npz"
    assert main(["features", "--backbone", "pixels", "--out", str(out), images[0], str(bad)]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err
    assert not out.exists()


def test_missing_checkpoint_message(tmp_path, capsys, images, monkeypatch):
    monkeypatch.setenv("TIPS_BENCH_CHECKPOINTS", str(tmp_path))
    assert main(["features", "--backbone", "clip_l14", "--out", str(tmp_path / "f.npz"), images[0]]) == 2
    err = capsys.readouterr().err
    assert "ViT-L-14.pt" in err and "openaipublic.azureedge.net" in err


def test_pixels_features_are_patch_pixels():
    from tips_bench.backbones import load_backbone

    backbone = load_backbone("pixels")
    x = torch.rand(1, 3, 28, 14)
    feats = backbone.encode_image(x)
    patch0 = backbone.normalize(x)[0, :, :14, :14].reshape(-1)
    torch.testing.assert_close(feats.patches[0][0, :, 0, 0], patch0)
