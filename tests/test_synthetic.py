"""Tests of the built-in synthetic world against hand computations of the same geometry."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tips_bench.data.base import DatasetInfo
from tips_bench.data.synthetic import (
    DEPTH_AGREE_ABS,
    DEPTH_AGREE_REL,
    DEPTH_RANGE,
    OBJECT_CLASSES,
    SEG_CLASSES,
    ObjectDataset,
    PairDataset,
    Scene,
    SceneDataset,
    SceneObject,
    long_caption,
    look_at,
    make_captions,
    make_scene,
    match_views,
    render_view,
    scene_camera,
    short_caption,
    spatial_relation,
    visible_objects,
)

SIZE = (72, 88)  # (height, width): small images keep the file fast


def _pose(eye, target) -> np.ndarray:
    """Camera-to-world pose written out by hand: x = forward x up (right), y = forward x x (down)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    f = (target - eye) / np.linalg.norm(target - eye)
    x = np.array([-f[2], 0.0, f[0]]) / math.hypot(f[0], f[2])  # f x (0, 1, 0)
    y = np.cross(f, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, f], axis=1)
    pose[:3, 3] = eye
    return pose


def _K(f: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


def _obj(shape, colour="red", size="large", x=0.0, z=0.0, r=0.5, h=1.0, rot=0.0, tex="plain") -> SceneObject:
    return SceneObject(shape, colour, size, (x, 0.0, z), r, h, rot, tex)


def _unproject(x, y, depth, K, pose) -> np.ndarray:
    cam = np.linalg.inv(K) @ np.array([x, y, 1.0]) * depth
    return pose[:3, :3] @ cam + pose[:3, 3]


# --------------------------------------------------------------------------- determinism, contract


def test_same_seed_split_index_gives_identical_samples():
    a = SceneDataset("train", 3, image_size=SIZE, seed=7)[1]
    b = SceneDataset("train", 3, image_size=SIZE, seed=7)[1]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key]
    other_split = SceneDataset("val", 3, image_size=SIZE, seed=7)[1]
    other_seed = SceneDataset("train", 3, image_size=SIZE, seed=8)[1]
    assert not np.array_equal(a["image"], other_split["image"])
    assert not np.array_equal(a["image"], other_seed["image"])
    p = PairDataset("train", 2, image_size=SIZE, num_points=8)
    np.testing.assert_array_equal(
        p[0]["points_b"], PairDataset("train", 2, image_size=SIZE, num_points=8)[0]["points_b"]
    )


def test_scene_sample_follows_the_contract():
    ds = SceneDataset("train", 2, image_size=SIZE)
    assert isinstance(ds.info, DatasetInfo) and ds.name == ds.info.name and ds.split == "train"
    assert ds.info.class_names == SEG_CLASSES == ("sky", "ground", "sphere", "cube", "cylinder", "cone")
    assert len(ds) == 2
    s = ds[-1]
    h, w = SIZE
    expected = {
        "image": (np.uint8, (h, w, 3)),
        "seg": (np.int64, (h, w)),
        "depth": (np.float32, (h, w)),
        "depth_valid": (np.bool_, (h, w)),
        "normals": (np.float32, (h, w, 3)),
        "normals_valid": (np.bool_, (h, w)),
        "intrinsics": (np.float32, (3, 3)),
        "pose": (np.float32, (4, 4)),
    }
    for key, (dtype, shape) in expected.items():
        assert s[key].dtype == dtype and s[key].shape == shape, key
    assert isinstance(s["id"], str) and s["id"] != ds[0]["id"]
    assert len(s["captions"]) == 2 and all(isinstance(c, str) and c for c in s["captions"])
    rot = s["pose"][:3, :3].astype(float)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(IndexError):
        ds[2]


def test_dense_ground_truth_invariants():
    for index in range(3):
        s = SceneDataset("val", 3, image_size=SIZE, seed=1)[index]
        valid = s["depth_valid"]
        np.testing.assert_array_equal(valid, s["normals_valid"])
        np.testing.assert_array_equal(s["depth"] > 0, valid)
        assert (s["seg"][~valid] == 0).all() and (s["seg"][valid] != 0).all()
        assert set(np.unique(s["seg"])) <= set(range(len(SEG_CLASSES)))
        d = s["depth"][valid]
        assert DEPTH_RANGE[0] < d.min() and d.max() < DEPTH_RANGE[1]
        norms = np.linalg.norm(s["normals"], axis=-1)
        np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
        assert (s["normals"][~valid] == 0).all()
        # Normals face the camera: dot(n, ray) < 0 with rays K^-1 (x, y, 1).
        ys, xs = np.nonzero(valid)
        rays = np.linalg.inv(s["intrinsics"].astype(float)) @ np.stack([xs, ys, np.ones_like(xs)])
        assert (np.einsum("ij,ji->i", s["normals"][ys, xs], rays) < 0).all()


# --------------------------------------------------------------------------- hand-placed scenes


def test_single_sphere_and_ground_against_hand_computation():
    r = 0.6
    centre = np.array([0.5, r, -0.3])
    scene = Scene((_obj("sphere", x=0.5, z=-0.3, r=r, h=2 * r),), ground_colour="grey")
    eye = np.array([2.0, 2.2, 3.5])
    K = _K(70.0, 40.0, 32.0)  # principal point on the centre of pixel (x=40, y=32)
    pose = _pose(eye, centre)
    view = render_view(scene, K, pose, SIZE, noise=0.0)
    rot = pose[:3, :3]

    # The optical axis passes through the sphere centre.
    assert view["seg"][32, 40] == SEG_CLASSES.index("sphere")
    assert view["depth"][32, 40] == pytest.approx(np.linalg.norm(centre - eye) - r, abs=1e-5)
    np.testing.assert_allclose(view["normals"][32, 40], [0.0, 0.0, -1.0], atol=1e-6)
    assert view["instance"][32, 40] == 0

    # An off-centre sphere pixel: solve |eye + t d - c|^2 = r^2 by hand.
    x, y = 46, 28
    d = rot @ (np.linalg.inv(K) @ [x, y, 1.0])
    oc = eye - centre
    a, b, c = d @ d, 2 * d @ oc, oc @ oc - r * r
    t = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert view["seg"][y, x] == 2
    assert view["depth"][y, x] == pytest.approx(t, rel=1e-6)
    np.testing.assert_allclose(view["normals"][y, x], rot.T @ ((eye + t * d - centre) / r), atol=1e-6)

    # A ground pixel near the bottom-left corner: ray/plane intersection, normal = world up.
    x, y = 3, 68
    d = rot @ (np.linalg.inv(K) @ [x, y, 1.0])
    t = -eye[1] / d[1]
    hit = eye + t * d
    assert math.hypot(hit[0], hit[2]) < scene.ground_radius
    assert view["seg"][y, x] == SEG_CLASSES.index("ground") and view["instance"][y, x] == -1
    assert view["depth"][y, x] == pytest.approx(t, rel=1e-6)  # rays have camera z = 1: t is z-depth
    np.testing.assert_allclose(view["normals"][y, x], rot.T @ [0.0, 1.0, 0.0], atol=1e-6)

    # The top row looks above the horizon: sky.
    d = rot @ (np.linalg.inv(K) @ [40, 0, 1.0])
    assert d[1] > 0
    assert view["seg"][0, 40] == 0 and view["depth"][0, 40] == 0
    assert (view["normals"][0, 40] == 0).all() and view["instance"][0, 40] == -1


R_, H_ = 0.5, 1.2
# Camera at (0, H/2, 4) looking along -z: camera x = world x, camera y = -world y, camera z = -world z.
_CASES = {
    "cube": (_obj("cube", r=R_, h=H_), 4 - R_, [0, 0, -1]),
    "cube turned 45 degrees (edge on)": (
        _obj("cube", r=R_, h=H_, rot=math.pi / 4),
        4 - R_ * math.sqrt(2),
        None,
    ),
    "cylinder": (_obj("cylinder", r=R_, h=H_), 4 - R_, [0, 0, -1]),
    # Half way up, the cone's radius is R/2; its outward normal is (0, R^2 / (2H), R/2), normalised.
    "cone": (_obj("cone", r=R_, h=H_), 4 - R_ / 2, [0, -(R_**2) / (2 * H_), -R_ / 2]),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_other_shapes_on_the_optical_axis(case):
    obj, depth, normal = _CASES[case]
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = [0.0, H_ / 2, 4.0]
    view = render_view(Scene((obj,)), _K(60.0, 40.0, 32.0), pose, SIZE, noise=0.0)
    assert view["seg"][32, 40] == SEG_CLASSES.index(obj.shape)
    assert view["depth"][32, 40] == pytest.approx(depth, abs=1e-5)
    if normal is not None:
        np.testing.assert_allclose(
            view["normals"][32, 40], np.array(normal) / np.linalg.norm(normal), atol=1e-6
        )


def test_cylinder_top_cap_seen_from_above():
    obj = _obj("cylinder", r=0.5, h=0.8)
    eye, target = np.array([0.0, 3.0, 1.5]), np.array([0.0, 0.8, 0.0])
    pose = _pose(eye, target)
    view = render_view(Scene((obj,)), _K(60.0, 40.0, 32.0), pose, SIZE, noise=0.0)
    # The optical axis hits the centre of the top cap, whose normal is world up.
    assert view["seg"][32, 40] == SEG_CLASSES.index("cylinder")
    assert view["depth"][32, 40] == pytest.approx(np.linalg.norm(target - eye), abs=1e-5)
    np.testing.assert_allclose(view["normals"][32, 40], pose[:3, :3].T @ [0, 1, 0], atol=1e-6)


def test_every_hit_lies_on_the_surface_it_is_labelled_with():
    scene = Scene(
        (
            _obj("sphere", x=-1.0, z=0.3, r=0.4, h=0.8),
            _obj("cube", x=0.2, z=-0.8, r=0.35, h=0.6, rot=0.6, tex="checkered"),
            _obj("cylinder", x=1.0, z=0.5, r=0.3, h=0.9, tex="striped"),
            _obj("cone", x=0.1, z=0.9, r=0.4, h=0.9),
        )
    )
    K, pose = _K(80.0, 43.5, 35.5), _pose([2.5, 2.0, 3.5], [0.0, 0.3, 0.0])
    view = render_view(scene, K, pose, SIZE, noise=0.0)
    ys, xs = np.nonzero(view["depth"] > 0)
    cam = np.linalg.inv(K) @ np.stack([xs, ys, np.ones_like(xs)]) * view["depth"][ys, xs].astype(float)
    pts = (pose[:3, :3] @ cam + pose[:3, 3:4]).T
    inst = view["instance"][ys, xs]
    assert set(np.unique(inst)) == {-1, 0, 1, 2, 3}
    tol = 1e-4
    ground = pts[inst == -1]
    assert np.abs(ground[:, 1]).max() < tol
    for i, o in enumerate(scene.objects):
        p = pts[inst == i] - [o.position[0], 0.0, o.position[2]]
        assert (view["seg"][ys, xs][inst == i] == o.class_id).all()
        rad = np.hypot(p[:, 0], p[:, 2])
        if o.shape == "sphere":
            err = np.abs(np.linalg.norm(p - [0, o.radius, 0], axis=1) - o.radius)
        elif o.shape == "cube":
            c, s = math.cos(o.rotation), math.sin(o.rotation)
            lx, lz = c * p[:, 0] - s * p[:, 2], s * p[:, 0] + c * p[:, 2]
            box = np.stack(
                [
                    np.abs(lx) / o.radius,
                    np.abs(p[:, 1] - o.height / 2) / (o.height / 2),
                    np.abs(lz) / o.radius,
                ]
            )
            err = np.abs(box.max(axis=0) - 1)
        elif o.shape == "cylinder":
            err = np.where(
                np.abs(p[:, 1] - o.height) < tol, np.maximum(rad - o.radius, 0), np.abs(rad - o.radius)
            )
        else:
            err = np.abs(rad - o.radius * (1 - p[:, 1] / o.height))
        assert err.max() < tol, o.shape
        assert p[:, 1].min() > -tol and p[:, 1].max() < o.height + tol


# --------------------------------------------------------------------------- correspondences


def test_pair_correspondences_follow_the_geometry():
    ds = PairDataset("test", 3, image_size=SIZE, num_points=32)
    assert ds.info.name == ds.name
    total = 0
    for index in range(len(ds)):
        s = ds[index]
        h, w = SIZE
        assert s["points_a"].dtype == np.float32 and s["points_a"].shape == (32, 2)
        assert s["points_b"].shape == (32, 2) and s["points_valid"].shape == (32,)
        assert s["bbox_b"].dtype == np.float32 and s["bbox_b"].shape == (4,)
        x0, y0, x1, y1 = s["bbox_b"]
        assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
        assert s["image_a"].shape == s["image_b"].shape == (h, w, 3)
        assert not np.allclose(s["pose_a"], s["pose_b"])
        K_a, K_b = s["intrinsics_a"].astype(float), s["intrinsics_b"].astype(float)
        pose_a, pose_b = s["pose_a"].astype(float), s["pose_b"].astype(float)
        valid = s["points_valid"]
        assert (s["points_a"][~valid] == 0).all() and (s["points_b"][~valid] == 0).all()
        total += int(valid.sum())
        for (xa, ya), (xb, yb) in zip(s["points_a"][valid], s["points_b"][valid], strict=True):
            assert 0 <= xa <= w - 1 and 0 <= ya <= h - 1 and 0 <= xb <= w - 1 and 0 <= yb <= h - 1
            world = _unproject(xa, ya, float(s["depth_a"][int(ya), int(xa)]), K_a, pose_a)
            cam_b = pose_b[:3, :3].T @ (world - pose_b[:3, 3])
            proj = K_b @ cam_b / cam_b[2]
            assert math.hypot(proj[0] - xb, proj[1] - yb) < 0.5
            depth_b = float(s["depth_b"][int(round(yb)), int(round(xb))])
            assert abs(depth_b - cam_b[2]) <= DEPTH_AGREE_REL * cam_b[2] + DEPTH_AGREE_ABS
        # The two cameras differ by a moderate rotation.
        cos = (np.trace(pose_a[:3, :3].T @ pose_b[:3, :3]) - 1) / 2
        assert 5 < math.degrees(math.acos(np.clip(cos, -1, 1))) < 50
    assert total >= 0.75 * 3 * 32


def _first_sphere_hit(eye: np.ndarray, target: np.ndarray, spheres) -> float:
    """Smallest s in (0, 1] where the segment eye -> target enters a sphere (inf if none)."""
    d, best = target - eye, math.inf
    for c, r in spheres:
        oc = eye - c
        a, b, cc = d @ d, 2 * d @ oc, oc @ oc - r * r
        disc = b * b - 4 * a * cc
        if disc >= 0:
            s = (-b - math.sqrt(disc)) / (2 * a)
            if s > 1e-9:
                best = min(best, s)
    return best


def test_correspondences_skip_points_occluded_in_b():
    # Two spheres side by side as seen from +x (view a), one behind the other as seen from +z (view b).
    scene = Scene(
        (_obj("sphere", x=0.0, z=1.0, r=0.5, h=1.0), _obj("sphere", "blue", x=0.0, z=-1.0, r=0.5, h=1.0))
    )
    spheres = [(np.array([0.0, 0.5, 1.0]), 0.5), (np.array([0.0, 0.5, -1.0]), 0.5)]
    K = _K(60.0, 43.5, 35.5)
    pose_a, pose_b = _pose([5.0, 1.2, 0.0], [0.0, 0.5, 0.0]), _pose([0.0, 1.2, 5.0], [0.0, 0.5, 0.0])
    view_a = render_view(scene, K, pose_a, SIZE, noise=0.0)
    view_b = render_view(scene, K, pose_b, SIZE, noise=0.0)
    eye_b = pose_b[:3, 3]

    def occluded(x, y):
        world = _unproject(x, y, float(view_a["depth"][y, x]), K, pose_a)
        return _first_sphere_hit(eye_b, world, spheres) < 1 - 1e-4

    ys, xs = np.nonzero(view_a["instance"] == 1)  # the far sphere, as seen in a
    assert sum(occluded(x, y) for x, y in zip(xs, ys, strict=True)) > 20  # the set-up has occlusions
    pa, pb, ok = match_views(scene, view_a, view_b, K, pose_a, K, pose_b, 400, np.random.default_rng(0))
    assert ok.sum() > 50
    for x, y in pa[ok].astype(int):
        assert not occluded(x, y)


def test_no_correspondences_when_view_b_looks_away():
    rng = np.random.default_rng(0)
    scene = make_scene(rng)
    K, pose_a, _ = scene_camera(rng, scene, SIZE)
    pose_b = look_at([0.0, 1.0, 0.0], [0.0, 3.0, 0.5])  # looking up at the sky
    view_a = render_view(scene, K, pose_a, SIZE)
    view_b = render_view(scene, K, pose_b, SIZE)
    assert (view_b["seg"] == 0).all()
    pa, pb, ok = match_views(scene, view_a, view_b, K, pose_a, K, pose_b, 16, rng)
    assert pa.shape == pb.shape == (16, 2) and not ok.any()


# --------------------------------------------------------------------------- captions


def _two_object_scene(ax, az, bx, bz) -> Scene:
    return Scene(
        (
            _obj("cube", "red", "large", ax, az, 0.5, 1.0),
            _obj("sphere", "blue", "small", bx, bz, 0.3, 0.6, tex="striped"),
        ),
        ground_colour="grey",
        ground_texture="checkered",
    )


def test_long_caption_relations_follow_the_camera_frame():
    scene = _two_object_scene(-1.0, 0.0, 1.0, 0.0)  # cube at world x = -1, sphere at x = +1
    front = look_at([0.0, 1.5, 5.0], [0.0, 0.3, 0.0])
    back = look_at([0.0, 1.5, -5.0], [0.0, 0.3, 0.0])
    # Hand check of the camera-frame x of the cube centre.
    assert (front[:3, :3].T @ ([-1.0, 0.5, 0.0] - front[:3, 3]))[0] < 0
    assert long_caption(scene, front) == (
        "a large red cube left of a small blue striped sphere, on a grey checkered floor"
    )
    assert long_caption(scene, back).startswith("a large red cube right of a small blue striped sphere")
    depth_scene = _two_object_scene(0.0, 1.0, 0.0, -1.0)  # cube nearer to a camera on +z
    assert " in front of " in long_caption(depth_scene, front)
    assert " behind " in long_caption(depth_scene, back)
    assert spatial_relation(np.array([-1.0, 0, 3]), np.array([1.0, 0, 3.5])) == "left of"
    assert spatial_relation(np.array([0.2, 0, 5]), np.array([0.0, 0, 3])) == "behind"


def test_long_caption_chains_relations_to_the_previous_object():
    scene = Scene(
        (
            _obj("cube", "red", x=-1.0),
            _obj("sphere", "blue", "small", x=0.0, r=0.3, h=0.6),
            _obj("cone", "green", x=0.0, z=-1.5),
        ),
        ground_colour="brown",
        ground_texture="speckled",
    )
    text = long_caption(scene, look_at([0.0, 1.5, 5.0], [0.0, 0.3, 0.0]))
    assert text == (
        "a large red cube left of a small blue sphere, and a large green cone behind the blue sphere, "
        "on a brown speckled floor"
    )


def test_captions_mention_every_visible_object():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scene = make_scene(rng)
        K, pose, _ = scene_camera(rng, scene, SIZE)
        view = render_view(scene, K, pose, SIZE, rng=rng)
        short, long = make_captions(scene, pose, view["instance"], rng)
        visible = visible_objects(scene, view["instance"])
        assert visible
        assert long.endswith(f"on a {scene.ground_colour} {scene.ground_texture} floor")
        for i in visible:
            o = scene.objects[i]
            assert o.shape in OBJECT_CLASSES
            assert re.search(rf"\ba {o.size} {o.colour} (striped |checkered )?{o.shape}\b", long), (long, o)
        assert short and len(short) < len(long)
    # Alt-text is noisy: over many draws it varies and sometimes drops the exact class names.
    scene = _two_object_scene(-1.0, 0.0, 1.0, 0.0)
    shorts = {short_caption(scene, np.random.default_rng(i)) for i in range(30)}
    assert len(shorts) > 15
    assert any("cube" not in s and "sphere" not in s for s in shorts)


# --------------------------------------------------------------------------- objects


def test_object_dataset_labels_are_balanced_and_match_the_pixels():
    ds = ObjectDataset("train", 12, image_size=(48, 48), seed=3)
    assert ds.info.class_names == OBJECT_CLASSES and ds.info.num_classes == 4
    labels = []
    for index in range(len(ds)):
        s = ds[index]
        assert isinstance(s["label"], int) and s["label"] == ds.label(index)
        objects = s["seg"][s["seg"] >= 2]
        majority = np.bincount(objects).argmax()
        assert SEG_CLASSES[majority] == OBJECT_CLASSES[s["label"]]
        assert objects.size > 0.05 * s["seg"].size  # large in the frame
        assert OBJECT_CLASSES[s["label"]] in s["captions"][1]
        labels.append(s["label"])
    assert np.bincount(labels, minlength=4).tolist() == [3, 3, 3, 3]
    assert labels != sorted(labels)
