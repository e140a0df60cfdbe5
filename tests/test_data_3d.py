"""3D datasets (NYUv2 depth and normals, NAVI, NAVI pairs, SPair-71k) read from tiny fixtures."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixture_writers import navi as navi_fx
from fixture_writers import nyu as nyu_fx
from fixture_writers import spair as spair_fx

from tips_bench.data.base import registered_datasets
from tips_bench.data.geometry import normals_from_depth, rotation_angle_deg
from tips_bench.data.navi import (
    Navi,
    NaviPairs,
    check_navi,
    decode_disparity_png,
    probe3d_box,
    quaternion_to_matrix,
)
from tips_bench.data.nyu import (
    EIGEN_CROP,
    NYU_INTRINSICS,
    NYUDepth,
    NYUNormals,
    check_nyu_depth,
    check_nyu_normals,
)
from tips_bench.data.spair import CATEGORIES, SPair, check_spair
from tips_bench.errors import DatasetError


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image")


# ------------------------------------------------------------------------------------------- geometry


def _plane_depth(K: np.ndarray, n: np.ndarray, c: float, h: int, w: int) -> np.ndarray:
    """Depth of the plane n . X = n . (0, 0, c) for every pixel (exact, float64)."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(K).T
    return n[2] * c / (rays @ n)


@pytest.mark.parametrize("normal", [(0.0, 0.0, -1.0), (0.2, -0.3, -1.0), (-0.5, 0.4, -0.8)])
def test_normals_from_depth_exact_on_a_plane(normal):
    K = np.array([[50.0, 0, 20.3], [0, 55.0, 14.7], [0, 0, 1]])
    n = np.asarray(normal) / np.linalg.norm(normal)  # points to the camera: n . X < 0
    depth = _plane_depth(K, n, 2.0, 30, 40)
    assert depth.min() > 0
    normals, valid = normals_from_depth(depth, K)
    interior = np.zeros((30, 40), bool)
    interior[1:-1, 1:-1] = True
    np.testing.assert_array_equal(valid, interior)
    np.testing.assert_allclose(normals[valid], np.broadcast_to(n, (valid.sum(), 3)), atol=1e-9)
    assert np.all(normals[~valid] == 0)
    # The same surface seen from behind is still oriented towards the camera.
    flipped, _ = normals_from_depth(depth, K, np.ones_like(valid))
    np.testing.assert_allclose(flipped[valid], normals[valid], atol=1e-9)


def test_normals_from_depth_needs_all_four_neighbours():
    K = np.array([[30.0, 0, 5.0], [0, 30.0, 5.0], [0, 0, 1]])
    depth = np.full((11, 11), 1.5)
    depth[5, 5] = 0.0  # a hole
    normals, valid = normals_from_depth(depth, K)
    assert not valid[5, 5] and not valid[4, 5] and not valid[6, 5] and not valid[5, 4] and not valid[5, 6]
    assert valid[4, 4] and valid[3, 5]
    assert valid.sum() == 81 - 5
    np.testing.assert_allclose(normals[valid], np.broadcast_to([0, 0, -1], (76, 3)), atol=1e-12)


def test_rotation_and_quaternion_helpers():
    a = np.radians(20.0)
    R = quaternion_to_matrix([np.cos(a / 2), 0, np.sin(a / 2), 0])
    np.testing.assert_allclose(
        R, [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], atol=1e-12
    )
    assert rotation_angle_deg(R, np.eye(3)) == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------ NYU depth


@pytest.fixture(scope="module")
def nyu_mat(tmp_path_factory) -> Path:
    return nyu_fx.write_nyu_depth(tmp_path_factory.mktemp("nyu_mat"), layout="mat")


@pytest.fixture(scope="module")
def nyu_bts(tmp_path_factory) -> Path:
    return nyu_fx.write_nyu_depth(tmp_path_factory.mktemp("nyu_bts"), layout="bts")


def _expected_valid(eigen: bool = True) -> np.ndarray:
    mask = np.zeros((480, 640), bool)
    mask[nyu_fx.HOLE_ROWS :, : nyu_fx.FAR_COLS] = True  # 0 < d < 10 m
    if eigen:
        crop = np.zeros_like(mask)
        crop[45:471, 41:601] = True
        mask &= crop
    return mask


def test_nyu_depth_mat_layout(nyu_mat):
    test = NYUDepth(nyu_mat, "test")
    train = NYUDepth(nyu_mat, "train", layout="mat")
    assert (len(test), len(train)) == (2, 2)
    assert test.layout == "mat" and EIGEN_CROP == (45, 471, 41, 601)
    s = test[0]  # testNdxs = [2, 4] (1-based) -> positions 1 and 3 -> kitchen, office
    assert s["id"] == "kitchen/rgb_00001" and test[1]["id"] == "office/rgb_00003"
    assert train[0]["id"] == "bathroom/rgb_00000"
    np.testing.assert_array_equal(s["image"], nyu_fx.fixture_image(1))
    assert s["depth"].dtype == np.float32 and s["depth"].shape == (480, 640)
    np.testing.assert_array_equal(s["depth"], nyu_fx.raw_depth())
    np.testing.assert_array_equal(s["depth_valid"], _expected_valid())
    assert s["depth_valid"].sum() == (471 - 100) * (600 - 41)
    np.testing.assert_allclose(s["intrinsics"], NYU_INTRINSICS)
    assert test.info.depth_range == (1e-3, 10.0)
    assert test.info.extra["eval_crop"] == "eigen" and test.info.extra["layout"] == "mat"


def test_nyu_depth_options(nyu_mat):
    no_crop = NYUDepth(nyu_mat, "test", eval_crop=None)[0]
    np.testing.assert_array_equal(no_crop["depth_valid"], _expected_valid(eigen=False))
    far = NYUDepth(nyu_mat, "test", eval_crop=None, max_depth=20.0)[0]
    assert far["depth_valid"].sum() == 380 * 640 + 100 * 40  # the 12 m columns (all rows) now count
    filled = NYUDepth(nyu_mat, "test", depth_source="filled")[0]
    np.testing.assert_array_equal(filled["depth"], nyu_fx.plane_depth())
    with pytest.raises(DatasetError, match="eval_crop"):
        NYUDepth(nyu_mat, "test", eval_crop="garg")
    with pytest.raises(DatasetError, match="split"):
        NYUDepth(nyu_mat, "val")


def test_nyu_depth_bts_layout(nyu_bts):
    test = NYUDepth(nyu_bts, "test")
    assert test.layout == "bts" and len(test) == 2
    s = test[0]
    assert s["id"] == "kitchen/rgb_00001"
    np.testing.assert_allclose(s["depth"], np.floor(nyu_fx.raw_depth() * 1000.0) / 1000.0, atol=1e-6)
    np.testing.assert_array_equal(s["depth_valid"], _expected_valid())
    assert s["image"].shape == (480, 640, 3) and s["image"][:5].mean() < 3  # BTS black border (JPEG)
    train = NYUDepth(nyu_bts, "train")
    assert [train[i]["id"] for i in range(len(train))] == [
        "bathroom_0001/rgb_00000",
        "bedroom_0003/rgb_00002",
    ]


def test_nyu_depth_check_and_errors(nyu_mat, nyu_bts, tmp_path):
    assert check_nyu_depth(nyu_mat) == [] and check_nyu_depth(nyu_bts) == []
    assert registered_datasets()["nyu_depth"].check(nyu_bts) == []
    mat = shutil.copytree(nyu_mat, tmp_path / "mat")
    (mat / "splits.mat").unlink()
    assert any(str(mat / "splits.mat") in p for p in check_nyu_depth(mat))
    with pytest.raises(DatasetError, match=str(mat / "splits.mat")):
        NYUDepth(mat, "test")
    _corrupt(mat / "nyu_depth_v2_labeled.mat")
    with pytest.raises(DatasetError, match=str(mat / "nyu_depth_v2_labeled.mat")):
        NYUDepth(mat, "test", layout="mat")
    bts = shutil.copytree(nyu_bts, tmp_path / "bts")
    depth = bts / "official_splits" / "test" / "office" / "sync_depth_00003.png"
    depth.unlink()
    assert any(str(depth) in p for p in check_nyu_depth(bts))
    with pytest.raises(DatasetError, match=str(depth)):
        NYUDepth(bts, "test")[1]
    (bts / "nyudepthv2_train_files_with_gt.txt").unlink()
    with pytest.raises(DatasetError, match="nyudepthv2_train_files_with_gt.txt"):
        NYUDepth(bts, "train")
    rgb = bts / "official_splits" / "test" / "kitchen" / "rgb_00001.jpg"
    _corrupt(rgb)
    with pytest.raises(DatasetError, match=str(rgb)):
        NYUDepth(bts, "test")[0]
    assert check_nyu_depth(tmp_path / "nowhere") != []
    with pytest.raises(DatasetError, match="nowhere"):
        NYUDepth(tmp_path / "nowhere", "test")


def test_nyu_depth_is_picklable(nyu_mat):
    ds = NYUDepth(nyu_mat, "test")
    ds[0]  # opens the HDF5 file
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1]["depth"], ds[1]["depth"])


# ---------------------------------------------------------------------------------------- NYU normals


@pytest.fixture(scope="module")
def nyu_normals(tmp_path_factory) -> Path:
    return nyu_fx.write_nyu_normals(tmp_path_factory.mktemp("nyu_normals"))


def _expected_normals_valid() -> np.ndarray:
    mask = np.zeros((480, 640), bool)
    mask[nyu_fx.HOLE_ROWS :, nyu_fx.ZERO_NORMAL_COLS : nyu_fx.FAR_COLS] = True
    return mask


def test_nyu_normals_test_split(nyu_normals, tmp_path):
    ds = NYUNormals(nyu_normals, "test", cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and [ds[i]["id"] for i in range(2)] == ["000002", "000004"]
    s = ds[0]
    np.testing.assert_array_equal(s["image"], nyu_fx.fixture_image(1))
    np.testing.assert_array_equal(s["normals_valid"], _expected_normals_valid())
    # File frame = -ours: the loader returns the plane normal, which points to the camera.
    np.testing.assert_allclose(
        s["normals"][s["normals_valid"]], np.broadcast_to(nyu_fx.PLANE_NORMAL, (224200, 3)), atol=1e-6
    )
    assert np.all(s["normals"][~s["normals_valid"]] == 0)
    assert s["depth"][s["depth_valid"]].max() <= 10.0 and not s["depth_valid"][:, 600:].any()
    assert ds.frame_agreement(0) == pytest.approx(1.0, abs=1e-4)
    assert NYUNormals(nyu_normals, "test", frame_signs=(1, 1, 1)).frame_agreement(1) == pytest.approx(
        -1.0, abs=1e-4
    )
    assert (tmp_path / "cache" / "nyu_normals_test_2.npy").is_file()
    cached = pickle.loads(pickle.dumps(NYUNormals(nyu_normals, "test", cache_dir=tmp_path / "cache")))
    np.testing.assert_array_equal(cached[1]["normals"], ds[1]["normals"])
    crop = NYUNormals(nyu_normals, "test", center_crop=True)[0]
    assert crop["image"].shape == (480, 480, 3) and crop["normals"].shape == (480, 480, 3)
    assert crop["intrinsics"][0, 2] == pytest.approx(NYU_INTRINSICS[0, 2] - 80)
    assert ds.info.extra["frame_signs"] == (-1, -1, -1)


def test_nyu_normals_geonet_splits(nyu_normals):
    lengths = {split: len(NYUNormals(nyu_normals, split)) for split in ("train", "valid", "trainval")}
    assert lengths == {"train": 2, "valid": 1, "trainval": 3}  # every 20th sorted file is valid
    s = NYUNormals(nyu_normals, "valid")[0]
    assert s["id"] == "bedroom_0001_00000_00" and s["image"].shape == (480, 640, 3)
    np.testing.assert_array_equal(s["image"], nyu_fx.fixture_image(0))  # 2 x mean added back, as probe3d
    np.testing.assert_array_equal(s["normals_valid"], _expected_normals_valid())
    np.testing.assert_allclose(s["normals"][s["normals_valid"]][0], nyu_fx.PLANE_NORMAL, atol=1e-6)


def test_nyu_normals_check_and_errors(nyu_normals, tmp_path):
    assert check_nyu_normals(nyu_normals) == []
    root = shutil.copytree(nyu_normals, tmp_path / "n")
    pklz = root / "surfacenormal_metadata" / "all_normals.pklz"
    pklz.unlink()
    assert any(str(pklz) in p for p in check_nyu_normals(root))
    with pytest.raises(DatasetError, match=str(pklz)):
        NYUNormals(root, "test")
    geonet = root / "nyu_geonet"
    bad = geonet / nyu_fx.GEONET_FILES[0]
    _corrupt(bad)
    with pytest.raises(DatasetError, match=str(bad)):
        NYUNormals(root, "valid")[0]
    shutil.rmtree(geonet)
    assert any(str(geonet) in p for p in check_nyu_normals(root))
    with pytest.raises(DatasetError, match=str(geonet)):
        NYUNormals(root, "train")
    with pytest.raises(DatasetError, match="frame_signs"):
        NYUNormals(nyu_normals, "test", frame_signs=(1, 0, 1))


# ------------------------------------------------------------------------------------------------ NAVI


@pytest.fixture(scope="module")
def navi_root(tmp_path_factory) -> Path:
    return navi_fx.write_navi(tmp_path_factory.mktemp("navi"))


def test_navi_disparity_decoding():
    depth = decode_disparity_png(np.array([[0, 1311, 65535]], dtype=np.uint16))
    np.testing.assert_allclose(depth, [[0.0, 655.35 / 1311, 0.01]], rtol=1e-6)


def test_navi_probe3d_splits(navi_root):
    ids = {s: [i[:2] + (i[2],) for i in Navi(navi_root, s, subsample=1)._items] for s in Navi.splits}
    assert ids["test"] == [("obj_a", "wild_set", f"{k:03d}") for k in range(3)] + [
        ("obj_b", "wild_set", f"{k:03d}") for k in range(2)
    ]
    # 90 % (floor) of the sorted multiview scenes train, the rest validate; obj_c has no wild_set.
    assert ids["train"] == [
        ("obj_a", "multiview-00-pixel_5", "000"),
        ("obj_a", "multiview-00-pixel_5", "001"),
    ]
    assert [i[:2] for i in ids["valid"]] == [("obj_a", "multiview_01_pixel_5")] * 2 + [
        ("obj_b", "multiview-00-iphone")
    ] * 2
    assert len(ids["trainval"]) == 6
    default = Navi(navi_root, "test")  # probe3d keeps every 4th instance
    assert [default[i]["id"] for i in range(len(default))] == ["obj_a/wild_set/000", "obj_b/wild_set/001"]
    assert default.info.class_names == ("obj_a", "obj_b") and default.info.num_classes == 2


def test_navi_sample_values(navi_root):
    ds = Navi(navi_root, "test", subsample=1)
    s = ds[0]
    plate, bump = 655.35 / navi_fx.PLATE_V, 655.35 / navi_fx.BUMP_V
    np.testing.assert_allclose(np.unique(s["depth"]), [0.0, bump, plate], rtol=1e-6)
    assert s["depth_valid"].sum() == 20 * 24 + 6 * 24
    assert s["depth"][12:36, 10:30].min() == pytest.approx(plate, rel=1e-6)
    # Fronto-parallel rectangles: normals (0, 0, -1) on the interior of each (18 x 22 + 4 x 22 pixels).
    assert s["normals_valid"].sum() == 18 * 22 + 4 * 22
    np.testing.assert_allclose(
        s["normals"][s["normals_valid"]], np.broadcast_to([0, 0, -1], (484, 3)), atol=1e-6
    )
    np.testing.assert_allclose(s["intrinsics"], [[40, 0, 31.5], [0, 40, 23.5], [0, 0, 1]])
    np.testing.assert_allclose(s["pose"], np.eye(4), atol=1e-7)
    assert s["label"] == 0 and s["image"].dtype == np.uint8
    shifted = ds[1]
    np.testing.assert_allclose(shifted["pose"][:3, 3], [-5 * navi_fx.PLATE_Z_MM / 40 / 1000, 0, 0], rtol=1e-6)
    rotated = ds[2]  # 20 degrees about y: normal -(sin 20, 0, cos 20), up to disparity quantisation
    mean = rotated["normals"][rotated["normals_valid"]].mean(0)
    np.testing.assert_allclose(mean, [-np.sin(np.radians(20)), 0, -np.cos(np.radians(20))], atol=0.02)
    exif = ds[3]  # stored rotated with EXIF orientation 6
    assert exif["id"] == "obj_b/wild_set/000" and exif["image"].shape == (48, 64, 3)
    assert exif["image"][20, 20, 2] > 150 and exif["image"][0, 0, 2] < 120  # plate colour where the plate is
    assert exif["label"] == 1


def test_navi_downsampled_and_probe3d_crop(navi_root):
    small = Navi(navi_root, "test", subsample=1, downsampled=True)[0]
    assert small["image"].shape == (24, 32, 3)
    np.testing.assert_allclose(small["intrinsics"], [[20, 0, 15.5], [0, 20, 11.5], [0, 0, 1]])
    crop = Navi(navi_root, "test", subsample=1, crop="probe3d")[0]
    assert crop["image"].shape == (512, 512, 3) and crop["depth"].shape == (512, 512)
    plate, bump = 655.35 / navi_fx.PLATE_V, 655.35 / navi_fx.BUMP_V
    np.testing.assert_allclose(np.unique(crop["depth"]), [0.0, bump, plate], rtol=1e-6)
    np.testing.assert_allclose(
        crop["normals"][crop["normals_valid"]], [[0, 0, -1]] * crop["normals_valid"].sum(), atol=1e-6
    )
    assert crop["depth_valid"][crop["normals_valid"]].all()
    valid = np.zeros((10, 10), bool)
    valid[2:5, 3:9] = True  # 3 x 6 object -> box side max(2, 5) = 5, centred on rows
    assert probe3d_box(valid) == (1, 6, 3, 8)


def test_navi_pairs_official(navi_root):
    pairs = NaviPairs(navi_root, "test", pairs="official", point_stride=1, max_points=None)
    assert len(pairs) == 3 and pairs.info.extra["subsample"] == 1
    s = pairs[0]  # 000 -> 001: camera shifted, plate moves 5 px, the closer bump 8.33 px
    assert s["id"] == "obj_a/wild_set/000-001"
    assert s["points_a"].shape == (20 * 24 + 6 * 24, 2) and s["points_valid"].dtype == bool
    shift = s["points_b"] - s["points_a"]
    on_plate = s["points_a"][:, 0] >= 10
    ok = s["points_valid"]
    np.testing.assert_allclose(shift[ok & on_plate], [[5.0, 0.0]] * int((ok & on_plate).sum()), atol=1e-3)
    bump_shift = 5.0 * navi_fx.PLATE_Z_MM / navi_fx.BUMP_Z_MM
    np.testing.assert_allclose(shift[~on_plate][:, 0], bump_shift, atol=1e-3)
    # Plate columns 10 and 11 land behind the bump in image b: occluded.
    np.testing.assert_array_equal(np.unique(s["points_a"][~ok][:, 0]), [10.0, 11.0])
    assert ok.sum() == 18 * 24 + 6 * 24 and np.all(s["points_b"][~ok] == -1)
    np.testing.assert_array_equal(s["bbox_b"], [11, 12, 34, 35])
    assert s["relative_angle"] == 0.0 and s["intrinsics_b"].shape == (3, 3)
    assert pairs[1]["relative_angle"] == 20.0 and pairs[1]["points_valid"].sum() > 0
    multiview = NaviPairs(navi_root, "train", pairs="official")
    assert len(multiview) == 1 and multiview[0]["id"] == "obj_a/multiview-00-pixel_5/000-001"


def test_navi_pairs_probe3d(navi_root):
    pairs = NaviPairs(navi_root, "test", subsample=1)
    got = [(p[0], p[2], p[3]) for p in pairs._pairs]
    # Partners are drawn at a relative rotation in (0, 120] degrees: identical rotations never pair.
    assert got[0] == ("obj_a", "000", "002") and got[1] == ("obj_a", "001", "002")
    assert got[2][:2] == ("obj_a", "002") and got[2][2] in ("000", "001")
    assert got[3:] == [("obj_b", "000", "001"), ("obj_b", "001", "000")]
    assert [p[4] for p in pairs._pairs] == pytest.approx([20, 20, 20, 30, 30])
    assert len(NaviPairs(navi_root, "test")) == 2  # every 4th pair by default
    s = NaviPairs(navi_root, "test", subsample=1, point_stride=4, max_points=10)[0]
    assert len(s["points_a"]) == 10 and s["points_valid"].any()
    assert s["image_a"].shape == (48, 64, 3) and s["bbox_b"].shape == (4,)


def test_navi_check_and_errors(navi_root, tmp_path):
    assert check_navi(navi_root) == []
    assert registered_datasets()["navi_pairs"].check(navi_root) == []
    root = shutil.copytree(navi_root, tmp_path / "navi")
    depth = root / "obj_a" / "wild_set" / "depth" / "001.png"
    depth.unlink()
    assert any(str(depth) in p for p in check_navi(root))
    with pytest.raises(DatasetError, match=str(depth)):
        Navi(root, "test", subsample=1)[1]
    image = root / "obj_a" / "wild_set" / "images" / "000.jpg"
    _corrupt(image)
    with pytest.raises(DatasetError, match=str(image)):
        Navi(root, "test", subsample=1)[0]
    annotations = root / "obj_b" / "wild_set" / "annotations.json"
    annotations.unlink()
    assert any(str(root / "obj_b" / "wild_set") in p for p in check_navi(root))
    with pytest.raises(DatasetError, match="annotations.json"):
        Navi(root, "test")
    pair_list = root / "custom_splits" / "pairwise_pixel_correspondences" / "pairs-wild_set.txt"
    shutil.rmtree(root / "obj_b")
    pair_list.unlink()
    with pytest.raises(DatasetError, match=str(pair_list)):
        NaviPairs(root, "test", pairs="official")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_navi(empty) != []
    with pytest.raises(DatasetError, match=str(empty)):
        Navi(empty, "test")


def test_navi_is_picklable(navi_root):
    ds = NaviPairs(navi_root, "test", subsample=1)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0]["points_b"], ds[0]["points_b"])


# --------------------------------------------------------------------------------------------- SPair


@pytest.fixture(scope="module")
def spair_root(tmp_path_factory) -> Path:
    return spair_fx.write_spair(tmp_path_factory.mktemp("spair"))


def test_spair_pairs(spair_root):
    test = SPair(spair_root, "test")
    assert len(test) == 1
    s = test[0]
    assert s["id"] == spair_fx.TEST_PAIR and s["category"] == "cat" and s["label"] == CATEGORIES.index("cat")
    np.testing.assert_array_equal(s["points_a"], [[10, 12], [30, 25]])
    np.testing.assert_array_equal(s["points_b"], [[12, 14], [33, 30]])
    assert s["points_a"].dtype == np.float32 and s["points_valid"].tolist() == [True, True]
    np.testing.assert_array_equal(s["bbox_b"], [8, 10, 40, 38])
    assert s["image_a"].shape == (40, 60, 3) and s["image_b"].shape == (48, 56, 3)
    assert s["viewpoint_variation"] == 1
    train = SPair(spair_root, "train")  # alias of 'trn'
    assert train.split == "trn" and len(train) == 2
    assert [p["category"] for p in train] == ["dog", "cat"]
    assert len(SPair(spair_root, "trn", category="cat")) == 1
    assert len(SPair(spair_root, "val", layout="small")) == 1
    assert test.info.num_classes == 18 and test.info.class_names[0] == "aeroplane"


def test_spair_check_and_errors(spair_root, tmp_path):
    assert check_spair(spair_root) == []
    assert registered_datasets()["spair"].check(spair_root) == []
    root = shutil.copytree(spair_root, tmp_path / "spair")
    image = root / "JPEGImages" / "cat" / "2008_000002.jpg"
    _corrupt(image)
    with pytest.raises(DatasetError, match=str(image)):
        SPair(root, "test")[0]
    image.unlink()
    assert any(str(image) in p for p in check_spair(root))
    listing = root / "Layout" / "large" / "val.txt"
    listing.unlink()
    assert any(str(listing) in p for p in check_spair(root))
    with pytest.raises(DatasetError, match=str(listing)):
        SPair(root, "val")
    shutil.rmtree(root / "PairAnnotation")
    with pytest.raises(DatasetError, match=str(root / "PairAnnotation")):
        SPair(root, "test")
    with pytest.raises(DatasetError, match="category"):
        SPair(spair_root, "test", category="sofa")


# ------------------------------------------------------------------------------------------ registry


def test_registered_entries(nyu_mat, navi_root, spair_root):
    entries = registered_datasets()
    for name in ("nyu_depth", "nyu_normals", "navi", "navi_pairs", "spair"):
        entry = entries[name]
        assert entry.how_to_get and entry.homepage and entry.default_dirname and entry.splits
    assert len(entries["nyu_depth"].open(nyu_mat, "test")) == 2
    assert len(entries["navi"].open(navi_root, "test", subsample=1)) == 5
    assert len(entries["navi_pairs"].open(navi_root, "test", pairs="official")) == 3
    assert len(entries["spair"].open(spair_root, "test")) == 1
