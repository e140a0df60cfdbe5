"""Training augmentation of ``mode: faithful`` (tips_bench.augment): each step's geometry and colour arithmetic
on small inputs with known answers, the whole pipeline's target consistency, determinism, and the view datasets."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from tips_bench.augment import (
    AugmentedViews,
    OnlineAugmented,
    augment_sample,
    color_aug,
    color_jitter,
    crop_box,
    flip_sample,
    photometric_distortion,
    rescaled_frame,
    resized_crop_box,
    resized_crop_sample,
    rotate_sample,
    rotate_vectors,
    training_frame,
)
from tips_bench.data.base import DatasetInfo, ListDataset
from tips_bench.errors import TipsBenchError
from tips_bench.frames import Frame, resize_nearest
from tips_bench.protocol import AugmentSpec, FrameSpec

DENSE = ("seg", "depth", "depth_valid", "normals", "normals_valid")
ALL_OPS = AugmentSpec(rescale=(0.5, 2.0), crop=(24, 24), cat_max_ratio=0.75, flip=0.5, photometric=True,
                      color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_p=0.8, resized_crop=(0.5, 1.0),
                      resized_crop_p=0.5, rotate=10.0, rotate_p=0.5, color_aug=True, color_aug_p=0.5)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The colour ops run torchvision on tiny tensors, where thread start-up dominates on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frame_of(**spec) -> Frame:
    return Frame.resolve(FrameSpec(**spec), (32, 32), 32, 8)


KEEP = frame_of(resize="keep_aspect", short_side=24, max_long_side=64)
NONE = frame_of(resize="none")


def coded_sample(h: int = 20, w: int = 30, seed: int = 0) -> dict:
    """A sample whose every dense target encodes its pixel's identity, so any geometric step can be traced."""
    rng = np.random.default_rng(seed)
    ident = np.arange(h * w, dtype=np.int64).reshape(h, w) + 256  # never 255 (ignore)
    angle = rng.uniform(-np.pi, np.pi, (h, w))
    normals = np.stack([np.cos(angle) * 0.6, np.sin(angle) * 0.6, np.full((h, w), 0.8)], -1).astype(np.float32)
    return {"id": "coded", "label": 7, "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "seg": ident,
            "depth": ident.astype(np.float32), "depth_valid": np.ones((h, w), bool), "normals": normals,
            "normals_valid": np.ones((h, w), bool), "intrinsics": np.eye(3, dtype=np.float32)}


def run(sample: dict, spec: AugmentSpec, frame: Frame = NONE, seed: int = 0, targets=DENSE, **kw) -> tuple[dict, dict]:
    record: dict = {}
    out = augment_sample(sample, spec, frame, np.random.default_rng(seed), targets, record=record, **kw)
    return out, record


# -- determinism and the sample contract ----------------------------------------------------------------


def test_same_generator_state_same_view_and_no_global_rng_touched():
    sample = coded_sample()
    np.random.seed(123)
    torch.manual_seed(123)
    random.seed(123)
    states = (np.random.get_state()[1].copy(), torch.get_rng_state().clone(), random.getstate())
    a, rec_a = run(sample, ALL_OPS, KEEP, seed=5, targets=(*DENSE, "label"))
    b, rec_b = run(sample, ALL_OPS, KEEP, seed=5, targets=(*DENSE, "label"))
    assert rec_a == rec_b
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c, rec_c = run(sample, ALL_OPS, KEEP, seed=6, targets=(*DENSE, "label"))
    assert rec_c != rec_a
    assert np.array_equal(np.random.get_state()[1], states[0])
    assert torch.equal(torch.get_rng_state(), states[1])
    assert random.getstate() == states[2]


def test_keys_kept_dropped_and_input_untouched():
    sample = coded_sample()
    before = {k: np.copy(v) for k, v in sample.items() if isinstance(v, np.ndarray)}
    out, _ = run(sample, ALL_OPS, KEEP, seed=1, targets=("seg", "label"))
    assert set(out) == {"id", "label", "image", "seg"}  # unlisted dense targets and the stale camera dropped
    assert out["label"] == 7 and out["id"] == "coded"
    assert out["image"].dtype == np.uint8 and out["image"].shape == (24, 24, 3)
    assert out["seg"].dtype == np.int64 and all(v.flags.c_contiguous for v in out.values() if hasattr(v, "flags"))
    for key, value in before.items():
        np.testing.assert_array_equal(sample[key], value)


def test_bad_input_is_one_clear_error():
    sample = coded_sample()
    with pytest.raises(TipsBenchError, match="not in the sample"):
        run({k: v for k, v in sample.items() if k != "depth"}, ALL_OPS, targets=("depth",))
    with pytest.raises(TipsBenchError, match="uint8 RGB"):
        run({**sample, "image": sample["image"].astype(np.float32)}, ALL_OPS)
    with pytest.raises(TipsBenchError, match="image's size"):
        run({**sample, "seg": sample["seg"][:10]}, ALL_OPS, targets=("seg",))
    with pytest.raises(TipsBenchError, match="low <= high"):
        run(sample, AugmentSpec(rescale=(2.0, 0.5)))
    with pytest.raises(TipsBenchError, match="views >= 1"):
        AugmentedViews(ListDataset(DatasetInfo("x", "train"), [sample]), ALL_OPS, NONE, views=0)


# -- base resize and rescale -----------------------------------------------------------------------------


def test_base_resize_is_the_frames_own():
    sample = coded_sample(20, 30)
    out, rec = run(sample, AugmentSpec(), KEEP)
    assert rec["resized"] == KEEP.resized_size(20, 30) == (24, 36)
    np.testing.assert_array_equal(out["image"], KEEP.resize_image(sample["image"]))
    for key in DENSE:
        np.testing.assert_array_equal(out[key], resize_nearest(sample[key], (24, 36)))


@pytest.mark.parametrize("frame", [KEEP, frame_of(resize="keep_aspect", short_side=24), frame_of(resize="square"),
                                   NONE])
def test_rescale_sizes_follow_the_drawn_ratio(frame):
    """mmseg RandomResize / DINOv3: the target sizes times a ratio from [lo, hi], truncated, then the frame's rule."""
    sample = coded_sample(20, 30)
    spec = AugmentSpec(rescale=(0.5, 2.0))
    ratios = []
    for seed in range(40):
        _, rec = run(sample, spec, frame, seed=seed)
        r = rec["rescale"]
        ratios.append(r)
        assert 0.5 <= r <= 2.0
        h, w = rec["resized"]
        if frame.resize == "square":
            assert (h, w) == (int(32 * r), int(32 * r))
        elif frame.resize == "none":
            assert (h, w) == (int(20 * r), int(30 * r))
        elif frame.max_long_side is None:  # DINOv3 FixedSideResize: short side int(24 r), long side rounded
            assert h == int(24 * r) and w == int(int(24 * r) * 30 / 20 + 0.5)
        else:  # mmcv rescale_size: one factor bounded by the scaled short side and the scaled long cap
            factor = min(int(64 * r) / 30, int(24 * r) / 20)
            assert (h, w) == (int(20 * factor + 0.5), int(30 * factor + 0.5))
    assert min(ratios) < 0.8 and max(ratios) > 1.7  # the range is covered


def test_rescale_matches_mmcv_rescale_size():
    mmcv_geometric = pytest.importorskip("mmcv.image.geometric")
    frame = frame_of(resize="keep_aspect", short_side=512, max_long_side=2048)
    for (h, w), ratio in [((480, 640), 0.5), ((375, 500), 1.37), ((1200, 300), 2.0), ((512, 2600), 0.81)]:
        scaled = rescaled_frame(frame, ratio, h, w)
        mm_w, mm_h = mmcv_geometric.rescale_size((w, h), (int(2048 * ratio), int(512 * ratio)))
        assert scaled.resized_size(h, w) == (mm_h, mm_w)


# -- crop, cat_max_ratio, padding ----------------------------------------------------------------------


def test_crop_offsets_stay_inside_and_cover_the_margin():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        (y0, x0, y1, x1), draws = crop_box((30, 40), (24, 24), rng)
        assert draws == 1 and 0 <= y0 <= 6 and 0 <= x0 <= 16 and (y1 - y0, x1 - x0) == (24, 24)
        starts.add((y0, x0))
    assert {y for y, _ in starts} == set(range(7)) and {x for _, x in starts} == set(range(17))


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    seg = np.zeros((40, 40), np.int64)
    seg[:12, :12] = 1  # class 1 only in the top-left corner; most 16x16 crops hold class 0 alone
    seg[30:, 30:] = 255  # ignored pixels never count

    def ok(box):
        y0, x0, y1, x1 = box
        labels, counts = np.unique(seg[y0:y1, x0:x1], return_counts=True)
        counts = counts[labels != 255]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    rng = np.random.default_rng(0)
    plain = [ok(crop_box(seg.shape, (16, 16), rng)[0]) for _ in range(200)]
    checked = [crop_box(seg.shape, (16, 16), rng, seg=seg, cat_max_ratio=0.75) for _ in range(200)]
    assert all(ok(box) for box, draws in checked if draws <= 10)  # accepted before the draws ran out
    assert all(1 <= draws <= 11 for _, draws in checked)
    assert np.mean([ok(b) for b, _ in checked]) > 3 * np.mean(plain)
    # one labelled class (ignore does not count): never accepted, so 1 + 10 draws (mmseg)
    one = np.where(seg == 255, 255, 0)
    assert {crop_box(one.shape, (16, 16), rng, seg=one, cat_max_ratio=0.75)[1] for _ in range(20)} == {11}


def test_small_image_is_padded_at_bottom_right_with_fill_values():
    sample = coded_sample(10, 14)
    spec = AugmentSpec(crop=(16, 20), photometric=True, flip=1.0)
    out, rec = run(sample, spec, image_pad=(1, 2, 3))
    assert rec["crop"] == (0, 0, 10, 14) and rec["flip"] is True
    assert out["image"].shape == (16, 20, 3)
    np.testing.assert_array_equal(out["image"][10:], np.broadcast_to([1, 2, 3], (6, 20, 3)))
    np.testing.assert_array_equal(out["image"][:, 14:], np.broadcast_to([1, 2, 3], (16, 6, 3)))
    assert (out["seg"][10:] == 255).all() and (out["seg"][:, 14:] == 255).all()
    assert (out["depth"][10:] == 0).all() and (out["normals"][10:] == 0).all()
    assert not out["depth_valid"][10:].any() and not out["normals_valid"][:, 14:].any()
    # the pad comes last: the flipped content sits top-left, the padding stays bottom/right
    np.testing.assert_array_equal(out["seg"][:10, :14], sample["seg"][:, ::-1])


# -- flip, rotate, resized crop ------------------------------------------------------------------------


def test_flip_mirrors_everything_and_negates_normal_x():
    sample = coded_sample()
    out = flip_sample(sample, DENSE)
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["seg"], sample["seg"][:, ::-1])
    np.testing.assert_array_equal(out["normals"][..., 0], -sample["normals"][:, ::-1, 0])
    np.testing.assert_array_equal(out["normals"][..., 1:], sample["normals"][:, ::-1, 1:])


def test_rotate_90_moves_a_known_pixel_and_turns_its_normal():
    sample = coded_sample(5, 5)
    sample["image"][:] = 0
    sample["image"][2, 4] = 200  # right of the centre
    sample["normals"][2, 4] = [1.0, 0.0, 0.0]  # facing right
    out = rotate_sample(sample, 90.0, DENSE)  # counter-clockwise: right of the centre goes to the top
    assert out["seg"][0, 2] == sample["seg"][2, 4] and out["depth"][0, 2] == sample["depth"][2, 4]
    assert out["image"][0, 2].tolist() == [200, 200, 200] and out["image"].sum() == 600
    np.testing.assert_allclose(out["normals"][0, 2], [0.0, -1.0, 0.0], atol=1e-6)  # now facing up
    # every pixel: (y, x) -> (4 - x, y)
    np.testing.assert_array_equal(out["seg"], np.rot90(sample["seg"]))
    # a normal's direction turns with the image: its screen direction equals the moved pixel's direction
    np.testing.assert_allclose(rotate_vectors(np.array([[0.0, 1.0, 0.5]]), 90.0), [[1.0, 0.0, 0.5]], atol=1e-6)


def test_rotate_fills_corners_with_fill_values():
    sample = coded_sample(16, 16)
    out = rotate_sample(sample, 45.0, DENSE)
    assert out["seg"][0, 0] == 255 and out["depth"][0, 0] == 0 and not out["depth_valid"][0, 0]
    assert not out["normals_valid"][0, 0] and (out["normals"][0, 0] == 0).all() and (out["image"][0, 0] == 0).all()
    inside = out["seg"] != 255
    np.testing.assert_array_equal(out["depth"][inside], out["seg"][inside].astype(np.float32))  # nearest, aligned
    assert out["depth_valid"][inside].all()


def test_rotate_matches_mmcv_imrotate_nearest():
    mmcv = pytest.importorskip("mmcv")
    seg = coded_sample(23, 31)["seg"]
    for angle in (7.5, -13.0):
        ours = rotate_sample({"image": np.zeros((23, 31, 3), np.uint8), "seg": seg}, angle, ["seg"])["seg"]
        # mmcv: positive angles turn clockwise, about ((w - 1) / 2, (h - 1) / 2)
        ref = mmcv.imrotate(seg.astype(np.float32), -angle, border_value=255, interpolation="nearest")
        assert np.mean(ours == ref.astype(np.int64)) > 0.97


def test_resized_crop_is_square_in_range_and_nearest_consistent():
    rng = np.random.default_rng(0)
    sample = coded_sample(20, 30)
    for _ in range(50):
        y0, x0, y1, x1 = box = resized_crop_box((20, 30), (0.3, 0.6), rng)
        side = y1 - y0
        assert side == x1 - x0 and y0 >= 0 and y1 <= 20 and x0 >= 0 and x1 <= 30
        assert round(np.sqrt(0.3 * 600)) <= side <= round(np.sqrt(0.6 * 600))
        out = resized_crop_sample(sample, box, DENSE)
        assert out["seg"].shape == (20, 30) and out["image"].shape == (20, 30, 3)
        ys, xs = np.divmod(out["seg"] - 256, 30)  # source pixel of each output pixel
        assert ys.min() == y0 and xs.min() == x0 and ys.max() <= y1 - 1 and xs.max() <= x1 - 1
        np.testing.assert_array_equal(ys[:, 0], y0 + np.floor(np.arange(20) * side / 20))  # OpenCV nearest rule
        np.testing.assert_array_equal(out["depth"], out["seg"].astype(np.float32))
        np.testing.assert_array_equal(out["image"], sample["image"][ys, xs])
        np.testing.assert_array_equal(out["normals"], sample["normals"][ys, xs])
    # no fitting side (area above the short side's square): the central square of the short side
    assert resized_crop_box((20, 30), (0.9, 1.0), rng) == (0, 5, 20, 25)


def test_whole_pipeline_keeps_every_target_aligned():
    """After resize, rotation, crop, flip and resized crop, every target still describes the same source pixel."""
    sample = coded_sample(20, 30)
    spec = AugmentSpec(rescale=(0.7, 1.5), crop=(16, 16), flip=0.5, rotate=20.0, rotate_p=0.7,
                       resized_crop=(0.5, 1.0), resized_crop_p=0.5)
    for seed in range(12):
        out, rec = run(sample, spec, KEEP, seed=seed)
        known = out["seg"] != 255
        assert known.any()
        np.testing.assert_array_equal(out["depth"][known], out["seg"][known].astype(np.float32))
        assert out["depth_valid"][known].all() and out["normals_valid"][known].all()
        assert not out["depth_valid"][~known].any()
        ys, xs = np.divmod(out["seg"][known] - 256, 30)
        expected = rotate_vectors(sample["normals"][ys, xs], rec.get("rotate", 0.0))
        if rec["flip"]:
            expected[:, 0] *= -1
        np.testing.assert_allclose(out["normals"][known], expected, atol=1e-5)


# -- photometric and colour ops --------------------------------------------------------------------------


def test_colour_steps_change_only_the_image():
    sample = coded_sample()
    spec = AugmentSpec(photometric=True, color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_p=1.0, color_aug=True,
                       color_aug_p=1.0)
    changed = 0
    for seed in range(6):
        out, rec = run(sample, spec, seed=seed)
        assert {"color_jitter", "color_aug", "photometric"} <= set(rec)
        for key in DENSE:
            np.testing.assert_array_equal(out[key], sample[key])
        assert out["image"].dtype == np.uint8 and out["image"].shape == sample["image"].shape
        changed += not np.array_equal(out["image"], sample["image"])
    assert changed == 6


def test_photometric_arithmetic_on_grey():
    """Saturation and hue leave grey alone, so the result is brightness and contrast with mmseg's clip/truncation."""
    grey = np.full((4, 4, 3), 100, np.uint8)
    seen = set()
    for seed in range(24):
        out, p = photometric_distortion(grey, np.random.default_rng(seed))
        v = np.float32(100)
        v = np.float32(np.clip(v + np.float32(p.get("brightness", 0.0)), 0, 255)).astype(np.uint8)
        v = np.float32(np.clip(np.float32(v) * np.float32(p.get("contrast", 1.0)), 0, 255)).astype(np.uint8)
        assert (np.abs(out.astype(int) - int(v)) <= 1).all() and out.dtype == np.uint8
        assert -32 <= p.get("brightness", 0) <= 32 and 0.5 <= p.get("contrast", 1) <= 1.5
        assert abs(p.get("hue", 0)) <= 0.1 and 0.5 <= p.get("saturation", 1) <= 1.5
        seen |= {k for k in p if k != "contrast_last"} | {f"last={p['contrast_last']}"}
    assert seen == {"brightness", "contrast", "saturation", "hue", "last=True", "last=False"}
    bright = np.full((2, 2, 3), 250, np.uint8)
    outs = [photometric_distortion(bright, np.random.default_rng(s))[0] for s in range(20)]
    assert all(o.max() <= 255 and o.dtype == np.uint8 for o in outs) and any((o == 255).all() for o in outs)


def test_color_jitter_factors_and_order():
    image = np.full((3, 3, 3), 120, np.uint8)
    out, p = color_jitter(image, (0.5, 0.0, 0.0, 0.0), np.random.default_rng(0))
    assert p["contrast"] is None and p["saturation"] is None and p["hue"] is None and 0.5 <= p["brightness"] <= 1.5
    assert (out == int(round(min(120 / 255 * p["brightness"], 1.0) * 255))).all()
    orders = {tuple(color_jitter(image, (0.2,) * 4, np.random.default_rng(s))[1]["order"]) for s in range(12)}
    assert len(orders) > 5 and all(sorted(o) == sorted(("brightness", "contrast", "saturation", "hue")) for o in orders)


def test_color_aug_arithmetic():
    image = np.array([[[0, 64, 255], [128, 200, 30]]], np.uint8)
    out, p = color_aug(image, np.random.default_rng(3))
    assert 0.9 <= p["gamma"] <= 1.1 and 0.75 <= p["brightness"] <= 1.25 and all(0.9 <= c <= 1.1 for c in p["colors"])
    expected = np.clip((image / 255.0) ** p["gamma"] * p["brightness"] * np.array(p["colors"]), 0, 1) * 255
    assert np.abs(out.astype(float) - expected).max() <= 0.51 and out.dtype == np.uint8


# -- view datasets -----------------------------------------------------------------------------------


def scene_dataset(n: int = 3):
    from tips_bench.data.catalog import open_dataset

    return open_dataset("synthetic_scenes", "train", size=n, image_size=(24, 32))


def test_augmented_views_indexing_and_fingerprint():
    ds = scene_dataset()
    spec = AugmentSpec(rescale=(0.5, 2.0), crop=(16, 16), flip=0.5, photometric=True)
    views = AugmentedViews(ds, spec, KEEP, views=4, seed=9, targets=("seg", "depth"))
    assert len(views) == 12 and views.source(6) == (1, 2) and views.source(-1) == (2, 3)
    assert (views.name, views.split, views.info) == (ds.name, ds.split, ds.info)
    item = views[6]
    rng = np.random.default_rng(np.random.SeedSequence(9, spawn_key=(0, 1, 2)))
    ref = augment_sample(ds[1], spec, KEEP, rng, ("seg", "depth"))
    for key in ("image", "seg", "depth"):
        np.testing.assert_array_equal(item[key], ref[key])
    assert item["image"].shape == (16, 16, 3) and item["id"] == ds[1]["id"]
    assert not np.array_equal(views[4]["image"], views[5]["image"])  # views of one image differ
    more = AugmentedViews(ds, spec, KEEP, views=6, seed=9, targets=("seg", "depth"))
    np.testing.assert_array_equal(more[1 * 6 + 2]["image"], item["image"])  # view 2 of image 1 kept when views grow
    with pytest.raises(IndexError):
        views[12]

    fp = views.fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    assert fp == AugmentedViews(scene_dataset(), spec, KEEP, views=4, seed=9, targets=("seg", "depth")).fingerprint()
    assert fp["views"] == 4 and fp["seed"] == 9 and fp["dataset"]["name"] == ds.name
    for other in (AugmentedViews(ds, spec, KEEP, views=4, seed=10, targets=("seg", "depth")),
                  AugmentedViews(ds, spec, KEEP, views=5, seed=9, targets=("seg", "depth")),
                  AugmentedViews(ds, AugmentSpec(crop=(16, 16)), KEEP, views=4, seed=9, targets=("seg", "depth")),
                  AugmentedViews(ds, spec, NONE, views=4, seed=9, targets=("seg", "depth")),
                  AugmentedViews(ds, spec, KEEP, views=4, seed=9, targets=("seg",))):
        assert other.fingerprint() != fp
    clone = pickle.loads(pickle.dumps(views))  # DataLoader workers receive a pickled copy
    np.testing.assert_array_equal(clone[6]["image"], item["image"])


def test_online_augmented_draws_fresh_views_per_epoch():
    ds = scene_dataset(2)
    spec = AugmentSpec(crop=(16, 16), flip=0.5, photometric=True, rescale=(0.5, 2.0))
    online = OnlineAugmented(ds, spec, KEEP, seed=9, targets=("seg",))
    assert len(online) == 2
    first = online[1]["image"]
    np.testing.assert_array_equal(online[1]["image"], first)
    fp0 = online.fingerprint()
    online.set_epoch(1)
    assert not np.array_equal(online[1]["image"], first) and online.fingerprint() != fp0
    online.set_epoch(0)
    np.testing.assert_array_equal(online[1]["image"], first)
    cached = AugmentedViews(ds, spec, KEEP, views=1, seed=9, targets=("seg",))
    assert not np.array_equal(cached[1]["image"], first)


def test_augmented_views_feed_the_extraction_step_unchanged():
    """The extraction worker step frames augmented views with training_frame: no resize, targets aligned."""
    from tips_bench.extract import PreparedSplit
    from tips_bench.tasks.base import FeatureRequest

    ds = scene_dataset(2)
    views = AugmentedViews(ds, AugmentSpec(rescale=(0.5, 2.0), crop=(16, 16), flip=0.5), KEEP, views=2, seed=1,
                           targets=DENSE)
    frame = training_frame(frame_of(resize="keep_aspect", short_side=24, fit="pad_center"))
    request = FeatureRequest(targets=DENSE, target_frame="input")
    prepared = PreparedSplit(views, 0, len(views), frame, request)
    for i in range(len(views)):
        item, aug = prepared[i], views[i]
        assert item["views"].shape == (1, 16, 16, 3)
        np.testing.assert_array_equal(item["views"][0], aug["image"])
        for key in DENSE:
            np.testing.assert_array_equal(item[key], aug[key])
