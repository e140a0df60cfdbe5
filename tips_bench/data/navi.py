"""NAVI (Jampani et al., NeurIPS 2023): object-centric depth, normals and multi-view correspondence.

Two datasets are registered:

* ``navi``: single images with metric depth (decoded from NAVI's disparity PNGs), normals derived
  from depth, intrinsics and pose; splits follow probe3d (``test`` = all ``wild_set`` images,
  ``train`` / ``valid`` = first 90 % / rest of each object's multiview scenes);
* ``navi_pairs``: image pairs of one collection with ground-truth correspondences obtained by
  reprojecting the depth of image a into image b with the annotated poses (occlusion-checked).

See ``docs/datasets/navi.md`` for the layout, the conventions and where we differ from probe3d.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tips_bench.data.base import DatasetInfo, Sample, register_loader, require_path
from tips_bench.data.geometry import (
    normals_from_depth,
    pixel_rays,
    project,
    rotation_angle_deg,
    transform_points,
)
from tips_bench.errors import DatasetError

WILD = "wild_set"
PAIRS_DIR = Path("custom_splits") / "pairwise_pixel_correspondences"
HOW = (
    "download https://storage.googleapis.com/gresearch/navi-dataset/navi_v1.5.tar.gz (or navi_v1.0.tar.gz) "
    "and extract it so that <root>/<object_id>/wild_set/annotations.json exists"
)
#: NAVI stores disparity v = 65535 * 10 / depth_mm in uint16 PNGs (google/navi: data_util.py
#: ``decode_depth``, scale_factor 10); 0 is background. depth_m = DISPARITY_TO_M / v.
DISPARITY_TO_M = 65535 * 10.0 / 1000.0
#: Counts of the official release (google/navi README): 36 objects, 35 in-the-wild collections with
#: 2,298 images.
FULL_OBJECTS, FULL_WILD_COLLECTIONS, FULL_WILD_IMAGES = 36, 35, 2298
PROBE3D_SIZE = 512


# --------------------------------------------------------------------------------------------- decoding


def decode_disparity_png(arr: np.ndarray) -> np.ndarray:
    """NAVI uint16 disparity -> float32 depth in metres (0 where the PNG is 0 = background)."""
    v = np.asarray(arr).astype(np.float64)
    with np.errstate(divide="ignore"):
        depth = np.where(v > 0, DISPARITY_TO_M / np.maximum(v, 1.0), 0.0)
    return depth.astype(np.float32)


def read_navi_image(path: Path) -> np.ndarray:
    """Decode a NAVI JPEG to uint8 RGB, applying the EXIF orientation (annotations assume it)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path} ({exc}); re-download or remove the file") from exc


def read_navi_depth(path: Path) -> np.ndarray:
    """Decode a NAVI depth PNG (uint16 disparity) to metres."""
    from PIL import Image, UnidentifiedImageError

    require_path(path, "NAVI depth map", HOW)
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read depth PNG {path} ({exc}); re-download or remove the file") from exc
    if arr.ndim != 2:
        raise DatasetError(f"depth PNG {path} is not single-channel (shape {arr.shape}); re-download it")
    return decode_disparity_png(arr)


def read_mask(path: Path) -> np.ndarray:
    """Object mask as bool (any non-zero value is object)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read mask {path} ({exc}); re-download or remove the file") from exc
    return arr.reshape(arr.shape[0], arr.shape[1], -1).max(axis=-1) > 0


def quaternion_to_matrix(q: Any) -> np.ndarray:
    """Rotation matrix of a quaternion given as [qw, qx, qy, qz] (need not be unit)."""
    w, x, y, z = (float(v) for v in q)
    s = 2.0 / (w * w + x * x + y * y + z * z)
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def object_to_camera(anno: dict[str, Any]) -> np.ndarray:
    """4x4 object -> camera transform of an annotation, translation converted from mm to metres.

    NAVI names ``translate(t) @ R(q)`` "object_to_world"; it maps object points into the camera
    frame (probe3d: ``Rt_01 = Rt_1 @ inv(Rt_0)``), whose axes are x right, y down, z forward.
    """
    try:
        cam = anno["camera"]
        T = np.eye(4)
        T[:3, :3] = quaternion_to_matrix(cam["q"])
        T[:3, 3] = np.asarray(cam["t"], dtype=np.float64).reshape(3) / 1000.0
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"NAVI annotation {anno.get('filename')} has no valid camera q/t ({exc})") from exc
    return T


def navi_intrinsics(anno: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Pinhole K for an image of (height, width) pixels (the annotated size or a rescaled copy).

    NAVI: fx = fy = focal_length (pixels of the annotated ``image_size`` [H, W]) and principal point
    (W // 2, H // 2) in OpenGL window coordinates, where pixel j spans [j, j + 1]; our coordinates put
    the centre of pixel j at j, hence the -0.5.
    """
    try:
        h0, w0 = (int(v) for v in anno["image_size"])
        f = float(anno["camera"]["focal_length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"NAVI annotation {anno.get('filename')} lacks image_size/focal_length ({exc})"
        ) from exc
    sx, sy = width / w0, height / h0
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise DatasetError(
            f"image {anno.get('filename')} is {height}x{width} but annotated {h0}x{w0} (other aspect ratio); "
            "re-download or regenerate the downsampled copy"
        )
    return np.array(
        [[f * sx, 0.0, (w0 // 2) * sx - 0.5], [0.0, f * sy, (h0 // 2) * sy - 0.5], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


# ------------------------------------------------------------------------------- probe3d crop pipeline


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of a nearest resize (torch 'nearest' / cv2 INTER_NEAREST: floor(dst * in / out))."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, ...) array."""
    return arr[_nearest_indices(arr.shape[0], height)][:, _nearest_indices(arr.shape[1], width)]


def _scale_K(K: np.ndarray, sx: float, sy: float, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """K after cropping at (x0, y0) then scaling by (sx, sy) (pixel-centre convention)."""
    K = K.copy()
    K[0, 2] = (K[0, 2] - x0 + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] - y0 + 0.5) * sy - 0.5
    K[0, 0] *= sx
    K[1, 1] *= sy
    return K


def probe3d_box(valid: np.ndarray) -> tuple[int, int, int, int]:
    """Square crop box (y0, y1, x0, x1) around ``valid`` pixels, as probe3d's ``bbox_crop``."""
    ys, xs = np.nonzero(valid)
    if ys.size == 0:
        raise ValueError("no valid depth to crop around")
    tl = np.array([ys.min(), xs.min()])
    box = np.array([ys.max(), xs.max()]) - tl
    size = int(box.max())
    img = np.array(valid.shape)
    if size > img.min() or size == 0:
        raise ValueError("aspect ratio prevents a square crop")
    pad = size - box
    tl_c = tl - pad // 2
    br_c = tl_c + size
    if (tl_c >= 0).all() and (br_c <= img).all():
        y0, x0 = tl_c
    else:
        y0, x0 = np.maximum(tl - pad, 0)
    y1, x1 = min(int(y0) + size, int(img[0])), min(int(x0) + size, int(img[1]))
    return int(y0), y1, int(x0), x1


def probe3d_crop(
    image: np.ndarray, depth: np.ndarray, K: np.ndarray, size: int = PROBE3D_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """probe3d's NAVI view pipeline; returns (image, depth, K, normals, normals_valid) of size x size.

    Short side -> ``size`` (nearest), centre crop, square box around depth > 0 (``bbox_crop``),
    normals from the boxed depth, then nearest resize to size x size (evals/datasets/navi.py).
    """
    h, w = depth.shape
    if w <= h:
        nh, nw = int(size * h / w), size
    else:
        nh, nw = size, int(size * w / h)
    image, depth = resize_nearest(image, nh, nw), resize_nearest(depth, nh, nw)
    K = _scale_K(K, nw / w, nh / h)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    image, depth = image[top : top + size, left : left + size], depth[top : top + size, left : left + size]
    K = _scale_K(K, 1.0, 1.0, left, top)
    y0, y1, x0, x1 = probe3d_box(depth > 0)
    image, depth = image[y0:y1, x0:x1], depth[y0:y1, x0:x1]
    K = _scale_K(K, 1.0, 1.0, x0, y0)
    normals, normals_valid = normals_from_depth(depth, K, depth > 0)
    ch, cw = depth.shape
    K = _scale_K(K, size / cw, size / ch)
    out = [resize_nearest(a, size, size) for a in (image, depth, normals, normals_valid)]
    return out[0], out[1], K, out[2], out[3]


# ------------------------------------------------------------------------------------------- indexing


def _is_multiview(name: str) -> bool:
    return name.startswith("multiview-") or name.startswith("multiview_")


def _read_annotations(path: Path) -> dict[str, dict[str, Any]]:
    require_path(path, "NAVI annotations file", HOW)
    try:
        records = json.loads(path.read_text())
        return {Path(str(rec["filename"])).stem: rec for rec in records}
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a NAVI annotation list ({exc}); re-download the archive") from exc


def scan_navi(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{object: {collection: annotations-by-image-id}} for wild_set and multiview collections."""
    index: dict[str, dict[str, dict[str, Any]]] = {}
    for obj_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        colls = sorted(
            p.name for p in obj_dir.iterdir() if p.is_dir() and (p.name == WILD or _is_multiview(p.name))
        )
        for coll in colls:
            index.setdefault(obj_dir.name, {})[coll] = _read_annotations(obj_dir / coll / "annotations.json")
    return index


def _split_instances(
    index: dict[str, dict[str, dict[str, Any]]], split: str, objects: list[str] | None
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """probe3d's ``define_instances_split`` with deterministic (sorted) order."""
    kept = sorted(o for o, colls in index.items() if WILD in colls and len(colls) > 1)
    if objects is not None:
        unknown = sorted(set(objects) - set(index))
        if unknown:
            raise DatasetError(f"NAVI object folder {unknown[0]} not found under the root; {HOW}")
        chosen = [o for o in kept if o in objects]
    else:
        chosen = kept
    instances = []
    for obj in chosen:
        colls = index[obj]
        if split == "test":
            scenes = [WILD]
        else:
            scenes = sorted(c for c in colls if _is_multiview(c))
            cut = int(0.9 * len(scenes))  # floor: at least one validation scene per object
            scenes = scenes[:cut] if split == "train" else scenes[cut:] if split == "valid" else scenes
        for scene in scenes:
            instances.extend((obj, scene, img_id) for img_id in sorted(colls[scene]) if "_" not in img_id)
    return instances, kept


class _NaviBase:
    """Shared index, view loading and options of the NAVI datasets."""

    splits = ("train", "valid", "trainval", "test")

    def __init__(
        self,
        root: Path | str,
        split: str,
        downsampled: bool = False,
        crop: str | None = None,
        objects: list[str] | None = None,
    ):
        self.root = require_path(Path(root), "NAVI root", HOW)
        if split not in self.splits:
            raise DatasetError(f"unknown NAVI split '{split}'; choose one of {', '.join(self.splits)}")
        if crop not in (None, "probe3d"):
            raise DatasetError(f"unknown NAVI crop '{crop}'; use None or 'probe3d'")
        self.split = split
        self.downsampled = bool(downsampled)
        self.crop = crop
        self._prefix = "downsampled_" if downsampled else ""
        self._index = scan_navi(self.root)
        if not self._index:
            raise DatasetError(
                f"no NAVI object folders (with wild_set/ or multiview-*/) under {self.root}; {HOW}"
            )
        self._instances, self._objects = _split_instances(self._index, split, objects)
        self._label = {obj: i for i, obj in enumerate(self._objects)}
        for obj, coll, img_id in self._instances[:1]:
            require_path(self._image_path(obj, coll, img_id), "NAVI image", HOW)

    def _image_path(self, obj: str, coll: str, img_id: str) -> Path:
        name = Path(str(self._index[obj][coll][img_id]["filename"])).name
        return self.root / obj / coll / "images" / f"{self._prefix}{name}"

    def _depth_path(self, obj: str, coll: str, img_id: str) -> Path:
        return self.root / obj / coll / "depth" / f"{self._prefix}{img_id}.png"

    def _load_view(self, obj: str, coll: str, img_id: str) -> dict[str, Any]:
        anno = self._index[obj][coll][img_id]
        image_path = self._image_path(obj, coll, img_id)
        require_path(image_path, "NAVI image", HOW)
        image = read_navi_image(image_path)
        depth = read_navi_depth(self._depth_path(obj, coll, img_id))
        if image.shape[:2] != depth.shape:
            raise DatasetError(f"{image_path} and its depth map differ in size; re-download the collection")
        K = navi_intrinsics(anno, *depth.shape)
        mask_path = self.root / obj / coll / "masks" / f"{img_id}.png"
        mask = read_mask(mask_path) if not self.downsampled and mask_path.is_file() else depth > 0
        if mask.shape != depth.shape:
            mask = depth > 0
        view: dict[str, Any] = {"anno": anno, "obj_to_cam": object_to_camera(anno)}
        if self.crop == "probe3d":
            try:
                image, depth, K, normals, normals_valid = probe3d_crop(image, depth, K)
            except ValueError as exc:
                raise DatasetError(f"cannot apply the probe3d crop to {image_path} ({exc})") from exc
            mask = depth > 0
        else:
            normals, normals_valid = normals_from_depth(depth, K, depth > 0)
        view.update(
            image=np.ascontiguousarray(image),
            depth=np.ascontiguousarray(depth, dtype=np.float32),
            K=K,
            normals=np.ascontiguousarray(normals, dtype=np.float32),
            normals_valid=np.ascontiguousarray(normals_valid),
            mask=mask,
        )
        return view

    def _info_extra(self) -> dict[str, Any]:
        return {
            "protocol": "probe3d",
            "objects": tuple(self._objects),
            "downsampled": self.downsampled,
            "crop": self.crop,
            "depth_units": "metres (disparity PNG: depth = 655.35 / v)",
        }


class Navi(_NaviBase):
    """NAVI single images: depth, derived normals, intrinsics, pose and object label.

    Options: ``subsample`` (probe3d keeps every 4th instance: default 4), ``downsampled`` (read
    probe3d's ``downsampled_*`` copies), ``crop`` (None = native resolution; 'probe3d' = its 512x512
    object crop), ``objects`` (restrict to some object ids).
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        subsample: int = 4,
        downsampled: bool = False,
        crop: str | None = None,
        objects: list[str] | None = None,
    ):
        super().__init__(root, split, downsampled=downsampled, crop=crop, objects=objects)
        if subsample < 1:
            raise DatasetError(f"subsample must be >= 1, got {subsample}")
        self.name = "navi"
        self._items = self._instances[::subsample]
        extra = self._info_extra() | {"subsample": subsample, "num_images": len(self._items)}
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            num_classes=len(self._objects),
            class_names=tuple(self._objects),
            depth_range=(0.0, 1.0),
            notes=(
                f"NAVI {split} (probe3d split: {'wild_set' if split == 'test' else 'multiview scenes'}); "
                "depth from disparity PNGs in metres, valid = depth > 0; normals from depth (4 cross "
                "products, oriented to the camera, valid where the 4 neighbours have depth); depth_range "
                "(0, 1) m is probe3d's probe output range, GT is not clipped; "
                f"every {subsample}th instance" + ("; probe3d 512x512 object crop" if crop else "")
            ),
            extra=extra,
        )

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        obj, coll, img_id = self._items[index]
        view = self._load_view(obj, coll, img_id)
        return {
            "id": f"{obj}/{coll}/{img_id}",
            "image": view["image"],
            "depth": view["depth"],
            "depth_valid": view["depth"] > 0,
            "normals": view["normals"],
            "normals_valid": view["normals_valid"],
            "intrinsics": view["K"].astype(np.float32),
            "pose": np.linalg.inv(view["obj_to_cam"]).astype(np.float32),
            "label": self._label[obj],
        }


class NaviPairs(_NaviBase):
    """Pairs of views of one NAVI collection with reprojected ground-truth correspondences.

    ``pairs='probe3d'``: every instance of the split gets a partner drawn (numpy, ``seed``) among the
    views of its collection at a relative rotation in (0, ``max_angle``] degrees, then every
    ``subsample``-th pair is kept (default 4), as probe3d's pair dataset. ``pairs='official'``: the
    pairs of NAVI's ``custom_splits/pairwise_pixel_correspondences/pairs-{wild_set,multiview}.txt``
    that fall in the split (default subsample 1).

    Points: pixels of image a with depth on a ``point_stride`` grid (at most ``max_points``, evenly
    spread), unprojected with K_a, moved with the poses, projected with K_b; a point is valid if it
    lands inside image b and image b's depth there agrees within ``occlusion_tol`` metres.
    ``bbox_b`` = (x0, y0, x1, y1) of image b's object mask (inclusive pixel coordinates).
    """

    def __init__(
        self,
        root: Path | str,
        split: str = "test",
        pairs: str = "probe3d",
        max_angle: float = 120.0,
        seed: int = 8,
        subsample: int | None = None,
        point_stride: int = 8,
        max_points: int | None = 1000,
        occlusion_tol: float = 0.01,
        downsampled: bool = False,
        crop: str | None = None,
        objects: list[str] | None = None,
    ):
        super().__init__(root, split, downsampled=downsampled, crop=crop, objects=objects)
        if pairs not in ("probe3d", "official"):
            raise DatasetError(f"unknown NAVI pairs source '{pairs}'; use 'probe3d' or 'official'")
        self.name = "navi_pairs"
        self.point_stride = int(point_stride)
        self.max_points = max_points
        self.occlusion_tol = float(occlusion_tol)
        if subsample is None:
            subsample = 4 if pairs == "probe3d" else 1
        all_pairs = self._probe3d_pairs(max_angle, seed) if pairs == "probe3d" else self._official_pairs()
        self._pairs = all_pairs[::subsample]
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            num_classes=len(self._objects),
            class_names=tuple(self._objects),
            notes=(
                f"NAVI {split} pairs ({pairs}); correspondences by depth reprojection with annotated poses, "
                f"occlusion tolerance {self.occlusion_tol:g} m; bbox_b from the mask of image b"
            ),
            extra=self._info_extra()
            | {
                "pairs": pairs,
                "max_angle": max_angle,
                "seed": seed,
                "subsample": subsample,
                "point_stride": self.point_stride,
                "max_points": max_points,
                "num_pairs": len(self._pairs),
            },
        )

    def _rotation(self, obj: str, coll: str, img_id: str) -> np.ndarray:
        return object_to_camera(self._index[obj][coll][img_id])[:3, :3]

    def _probe3d_pairs(self, max_angle: float, seed: int) -> list[tuple[str, str, str, str, float]]:
        rng = np.random.default_rng(seed)
        groups: dict[tuple[str, str], list[str]] = {}
        for obj, coll, img_id in self._instances:
            groups.setdefault((obj, coll), []).append(img_id)
        rotations = {key: [self._rotation(*key, i) for i in ids] for key, ids in groups.items()}
        out = []
        for obj, coll, img_id in self._instances:
            ids, rots = groups[(obj, coll)], rotations[(obj, coll)]
            R = rots[ids.index(img_id)]
            angles = np.array([rotation_angle_deg(R, other) for other in rots])
            candidates = np.nonzero((angles > 0) & (angles <= max_angle))[0]
            if candidates.size == 0:
                continue  # probe3d would fail here; such views get no pair
            j = int(rng.choice(candidates))
            out.append((obj, coll, img_id, ids[j], float(angles[j])))
        return out

    def _official_pairs(self) -> list[tuple[str, str, str, str, float]]:
        wanted = {(obj, coll) for obj, coll, _ in self._instances}
        files = ["pairs-wild_set.txt"] if self.split == "test" else ["pairs-multiview.txt"]
        out = []
        for name in files:
            path = require_path(self.root / PAIRS_DIR / name, "NAVI pair list", HOW)
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    a, b, angle = Path(fields[0]).parts, Path(fields[1]).parts, float(fields[2])
                    key_a, key_b = (a[0], a[1], Path(a[-1]).stem), (b[0], b[1], Path(b[-1]).stem)
                except (IndexError, ValueError) as exc:
                    raise DatasetError(f"line {line_no} of {path} is not 'img1 img2 angle' ({exc})") from exc
                if key_a[:2] != key_b[:2] or key_a[:2] not in wanted:
                    continue
                colls = self._index.get(key_a[0], {}).get(key_a[1], {})
                if key_a[2] in colls and key_b[2] in colls:
                    out.append((key_a[0], key_a[1], key_a[2], key_b[2], angle))
        return out

    def __len__(self) -> int:
        return len(self._pairs)

    def _sample_points(self, depth: np.ndarray) -> np.ndarray:
        grid = np.zeros(depth.shape, dtype=bool)
        grid[:: self.point_stride, :: self.point_stride] = True
        ys, xs = np.nonzero(grid & (depth > 0))
        if self.max_points is not None and ys.size > self.max_points:
            keep = np.unique(np.linspace(0, ys.size - 1, self.max_points).round().astype(np.int64))
            ys, xs = ys[keep], xs[keep]
        return np.stack([xs, ys], axis=-1).astype(np.float64)

    def __getitem__(self, index: int) -> Sample:
        obj, coll, id_a, id_b, angle = self._pairs[index]
        va, vb = self._load_view(obj, coll, id_a), self._load_view(obj, coll, id_b)
        points_a = self._sample_points(va["depth"])
        xs, ys = points_a[:, 0].astype(np.int64), points_a[:, 1].astype(np.int64)
        cam_a = pixel_rays(*va["depth"].shape, va["K"])[ys, xs] * va["depth"][ys, xs, None]
        a_to_b = vb["obj_to_cam"] @ np.linalg.inv(va["obj_to_cam"])
        xy_b, z_b = project(transform_points(a_to_b, cam_a), vb["K"])
        h, w = vb["depth"].shape
        with np.errstate(invalid="ignore"):
            col, row = np.rint(xy_b[:, 0]), np.rint(xy_b[:, 1])
            inside = (z_b > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        ci, ri = np.where(inside, col, 0).astype(np.int64), np.where(inside, row, 0).astype(np.int64)
        seen = vb["depth"][ri, ci]
        valid = inside & (seen > 0) & (np.abs(seen - z_b) <= self.occlusion_tol)
        points_b = np.where(valid[:, None], xy_b, -1.0)
        mask_ys, mask_xs = np.nonzero(vb["mask"])
        bbox_b = (
            np.array([mask_xs.min(), mask_ys.min(), mask_xs.max(), mask_ys.max()], dtype=np.float32)
            if mask_ys.size
            else np.zeros(4, dtype=np.float32)
        )
        return {
            "id": f"{obj}/{coll}/{id_a}-{id_b}",
            "image_a": va["image"],
            "image_b": vb["image"],
            "points_a": points_a.astype(np.float32),
            "points_b": points_b.astype(np.float32),
            "points_valid": valid,
            "bbox_b": bbox_b,
            "label": self._label.get(obj, -1),
            "relative_angle": angle,
            "depth_a": va["depth"],
            "depth_b": vb["depth"],
            "intrinsics_a": va["K"].astype(np.float32),
            "intrinsics_b": vb["K"].astype(np.float32),
            "pose_a": np.linalg.inv(va["obj_to_cam"]).astype(np.float32),
            "pose_b": np.linalg.inv(vb["obj_to_cam"]).astype(np.float32),
        }


def check_navi(root: Path | str, strict: bool = False) -> list[str]:
    """Problems with a NAVI root: annotations, images and depth maps of every collection."""
    root = Path(root)
    if not root.is_dir():
        return [f"NAVI root {root} does not exist"]
    problems: list[str] = []
    try:
        index = scan_navi(root)
    except DatasetError as exc:
        return [str(exc)]
    if not index:
        return [f"no NAVI object folders (with wild_set/ or multiview-*/) under {root}"]
    wild_images = 0
    for obj, colls in index.items():
        for coll, annos in colls.items():
            if coll == WILD:
                wild_images += len(annos)
            for img_id, anno in annos.items():
                folder = root / obj / coll
                for path in (
                    folder / "images" / Path(str(anno["filename"])).name,
                    folder / "depth" / f"{img_id}.png",
                ):
                    if not path.is_file():
                        problems.append(f"{path} is missing")
    wild_colls = sum(WILD in colls for colls in index.values())
    if strict or len(index) == FULL_OBJECTS:
        for what, expected, found in (
            ("objects", FULL_OBJECTS, len(index)),
            ("wild_set collections", FULL_WILD_COLLECTIONS, wild_colls),
            ("wild_set images", FULL_WILD_IMAGES, wild_images),
        ):
            if found != expected:
                problems.append(f"NAVI {what}: expected {expected}, found {found}")
    return problems


register_loader(
    Navi,
    name="navi",
    description="NAVI object images: depth from disparity PNGs, normals from depth, probe3d splits",
    default_dirname="navi_v1.5",
    homepage="https://navidataset.github.io/",
    licence="CC BY 4.0 (data, as stated by the authors; unverified here); code Apache-2.0",
    check=check_navi,
    how_to_get=(
        "Download storage.googleapis.com/gresearch/navi-dataset/navi_v1.5.tar.gz (30 GB) and extract it; "
        "the root holds one folder per object with wild_set/ and multiview-*/ collections."
    ),
)

register_loader(
    NaviPairs,
    name="navi_pairs",
    description="NAVI view pairs, correspondences by depth reprojection (probe3d or official pairs)",
    default_dirname="navi_v1.5",
    homepage="https://navidataset.github.io/",
    licence="CC BY 4.0 (data, as stated by the authors; unverified here); code Apache-2.0",
    check=check_navi,
    how_to_get=(
        "Same archive as 'navi' (navi_v1.5.tar.gz); the official pair lists are under "
        "custom_splits/pairwise_pixel_correspondences/."
    ),
)
