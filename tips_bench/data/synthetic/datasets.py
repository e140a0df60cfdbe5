"""The synthetic datasets: seeded scenes, single objects and view pairs, each sample a pure function of its index."""

from __future__ import annotations

import math
import zlib

import numpy as np

from tips_bench.data.base import DatasetInfo, Sample
from tips_bench.data.synthetic.cameras import _fit_distance, make_intrinsics, orbit_pose, scene_camera
from tips_bench.data.synthetic.captions import make_captions
from tips_bench.data.synthetic.renderer import match_views, object_bbox, render_view
from tips_bench.data.synthetic.scene import DEPTH_RANGE, OBJECT_CLASSES, SEG_CLASSES, Scene, make_object, make_scene

_KIND_SCENE, _KIND_OBJECT, _KIND_PAIR = 1, 2, 3



def _split_id(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


class _Synthetic:
    """Indexing, seeding and ``info`` shared by the synthetic datasets."""

    kind = 0

    def __init__(self, info: DatasetInfo, split: str, length: int, image_size: tuple[int, int], seed: int):
        self.info = info
        self.name = info.name
        self.split = split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self._length = int(length)

    def __len__(self) -> int:
        return self._length

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(
                f"index {index} out of range for {self.name}/{self.split} of size {self._length}"
            )
        return index

    def _rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, self.kind, _split_id(self.split), index, stream])
        )

    def _dense(
        self, scene: Scene, K: np.ndarray, pose: np.ndarray, rng: np.random.Generator, index: int
    ) -> Sample:
        view = render_view(scene, K, pose, self.image_size, rng=rng)
        valid = view["seg"] != 0
        return {
            "id": f"{self.name}/{self.split}/{index:06d}",
            "image": view["image"],
            "seg": view["seg"],
            "depth": view["depth"],
            "depth_valid": valid,
            "normals": view["normals"],
            "normals_valid": valid.copy(),
            "intrinsics": K.astype(np.float32),
            "pose": pose.astype(np.float32),
            "captions": make_captions(scene, pose, view["instance"], rng),
        }


def _info(name: str, split: str, class_names: tuple[str, ...], notes: str, **extra) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        split=split,
        num_classes=len(class_names),
        class_names=class_names,
        depth_range=DEPTH_RANGE,
        notes=notes,
        extra=extra,
    )


class SceneDataset(_Synthetic):
    """Scenes of 2 to 4 objects seen from a random azimuth and elevation, with all dense keys."""

    kind = _KIND_SCENE

    def __init__(self, split: str, num_images: int, image_size: tuple[int, int] = (224, 224), seed: int = 0):
        info = _info(
            "synthetic-scenes", split, SEG_CLASSES,
            "ray-cast scenes of 2-4 shapes; seg classes = SEG_CLASSES; exact depth, normals, captions",
            seed=seed, image_size=tuple(image_size),
        )  # fmt: skip
        super().__init__(info, split, num_images, image_size, seed)

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        rng = self._rng(index)
        scene = make_scene(rng)
        K, pose, _ = scene_camera(rng, scene, self.image_size)
        return self._dense(scene, K, pose, rng, index)


class ObjectDataset(_Synthetic):
    """One large, roughly centred object per image; ``label`` indexes ``OBJECT_CLASSES``.

    Classes are balanced: each block of 4 consecutive indices holds every class once, in a seeded
    random order.
    """

    kind = _KIND_OBJECT

    def __init__(self, split: str, num_images: int, image_size: tuple[int, int] = (224, 224), seed: int = 0):
        info = _info(
            "synthetic-objects", split, OBJECT_CLASSES,
            "ray-cast single objects; label = index into OBJECT_CLASSES; seg classes = SEG_CLASSES",
            seed=seed, image_size=tuple(image_size), seg_classes=SEG_CLASSES,
        )  # fmt: skip
        super().__init__(info, split, num_images, image_size, seed)

    def label(self, index: int) -> int:
        """Class of image ``index`` (cheap: no rendering)."""
        index = self._index(index)
        order = self._rng(index // 4, stream=1).permutation(len(OBJECT_CLASSES))
        return int(order[index % 4])

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        label = self.label(index)
        rng = self._rng(index)
        obj = make_object(rng, OBJECT_CLASSES[label])
        base = make_scene(rng, num_objects=0)
        scene = Scene(
            (obj,), base.ground_colour, base.ground_texture, base.ground_tile, base.sky, base.light_dir
        )
        K = make_intrinsics(self.image_size, float(rng.uniform(45.0, 55.0)))
        target = obj.centre + rng.uniform(-0.05, 0.05, 3) * obj.height
        distance = max(1.1, _fit_distance(scene, target, K, self.image_size) * float(rng.uniform(1.05, 1.35)))
        pose = orbit_pose(
            target,
            distance,
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(math.radians(15), math.radians(45))),
        )
        sample = self._dense(scene, K, pose, rng, index)
        sample["label"] = label
        return sample


class PairDataset(_Synthetic):
    """Two views of one scene, 10 to 40 degrees apart in azimuth, with geometric correspondences."""

    kind = _KIND_PAIR

    def __init__(
        self,
        split: str,
        num_pairs: int,
        image_size: tuple[int, int] = (224, 224),
        seed: int = 0,
        num_points: int = 64,
    ):
        info = _info(
            "synthetic-pairs", split, SEG_CLASSES,
            "two ray-cast views per scene; points from unprojection + occlusion test",
            seed=seed, image_size=tuple(image_size), num_points=num_points,
        )  # fmt: skip
        super().__init__(info, split, num_pairs, image_size, seed)
        self.num_points = int(num_points)

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        rng = self._rng(index)
        scene = make_scene(rng)
        K_a, pose_a, orbit = scene_camera(rng, scene, self.image_size)
        K_b = K_a.copy()
        delta = math.radians(float(rng.uniform(10.0, 40.0))) * (1 if rng.random() < 0.5 else -1)
        elevation = float(
            np.clip(orbit["elevation"] + math.radians(rng.uniform(-5, 5)), math.radians(15), math.radians(55))
        )
        target = np.array([orbit["tx"], orbit["ty"], orbit["tz"]])
        pose_b = orbit_pose(target, orbit["distance"], orbit["azimuth"] + delta, elevation)
        view_a = render_view(scene, K_a, pose_a, self.image_size, rng=rng)
        view_b = render_view(scene, K_b, pose_b, self.image_size, rng=rng)
        pts_a, pts_b, valid = match_views(
            scene, view_a, view_b, K_a, pose_a, K_b, pose_b, self.num_points, rng
        )
        return {
            "id": f"{self.name}/{self.split}/{index:06d}",
            "image_a": view_a["image"],
            "image_b": view_b["image"],
            "points_a": pts_a,
            "points_b": pts_b,
            "points_valid": valid,
            "bbox_b": object_bbox(view_b["instance"]),
            "depth_a": view_a["depth"],
            "depth_b": view_b["depth"],
            "intrinsics_a": K_a.astype(np.float32),
            "intrinsics_b": K_b.astype(np.float32),
            "pose_a": pose_a.astype(np.float32),
            "pose_b": pose_b.astype(np.float32),
        }
