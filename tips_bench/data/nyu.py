"""NYU Depth v2: monocular depth (Eigen 654-image test split) and surface normals.

Two datasets are registered:

* ``nyu_depth``: depth in metres from either the official labeled ``.mat`` (HDF5 v7.3) plus
  ``splits.mat``, or the BTS / Monocular-Depth-Estimation-Toolbox PNG layout (``sync/`` training
  frames, ``official_splits/test/`` PNGs, the split text files BTS uses);
* ``nyu_normals``: the probe3d protocol: Ladicky et al. normals packaged by FAIR
  (``all_normals.pklz`` + ``test_SN40.json``) with images and ``rawDepths`` of the labeled set for
  the 654 test images, and the GeoNet per-frame ``.mat`` files for training.

See ``docs/datasets/nyu.md`` for layouts, provenance and protocol choices.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tips_bench.data.base import (
    DatasetInfo,
    Sample,
    read_rgb,
    register_loader,
    require_path,
)
from tips_bench.data.geometry import normals_from_depth
from tips_bench.errors import DatasetError

NYU_HEIGHT, NYU_WIDTH = 480, 640
#: Eigen et al. evaluation crop on the 480x640 GT, rows 45:471 and columns 41:601 (end-exclusive),
#: as hard-coded by BTS (cleinc/bts: pytorch/bts_eval.py, ``eval_mask[45:471, 41:601] = 1``).
EIGEN_CROP = (45, 471, 41, 601)
#: RGB intrinsics of the NYU Kinect from the NYU toolbox ``camera_params.m`` (fx, fy, cx, cy),
#: principal point shifted by -1 from MATLAB's 1-based pixel coordinates.
NYU_INTRINSICS = np.array(
    [[518.85790117450188, 0.0, 324.58244941119034], [0.0, 519.46961112127485, 252.73616633400465], [0, 0, 1]],
    dtype=np.float32,
)

LABELED_MAT = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"
BTS_SPLIT_FILES = {
    "train": ("nyudepthv2_train_files_with_gt.txt", "nyu_train.txt"),
    "test": ("nyudepthv2_test_files_with_gt.txt", "nyu_test.txt"),
}
BTS_BASE_DIRS = {"train": ("sync", "."), "test": ("official_splits/test", ".")}
FULL_COUNTS = {"images": 1449, "train": 795, "test": 654, "bts_train": 24231}

MAT_HOW = (
    "download nyu_depth_v2_labeled.mat (http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/"
    "nyu_depth_v2_labeled.mat) and splits.mat (http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/"
    "splits.mat) into the dataset root"
)
BTS_HOW = (
    "follow the BTS NYU instructions (github.com/cleinc/bts): unzip sync.zip to <root>/sync, extract the "
    "official test PNGs to <root>/official_splits/test and copy the split .txt files to <root>"
)
FAIR_HOW = (
    "download https://dl.fbaipublicfiles.com/fair_self_supervision_benchmark/"
    "nyuv2_surfacenormal_metadata.zip and unzip it into the dataset root"
)
GEONET_HOW = (
    "download GeoNet's data1.zip and data2.zip (github.com/xjqi/GeoNet) and move all .mat files into it"
)

#: GeoNet ``img`` holds mean-subtracted RGB; probe3d adds back twice this mean (evals/datasets/nyu.py).
GEONET_MEAN = np.array([122.175, 116.169, 103.508], dtype=np.float64)
#: Sorted positions probe3d deletes from the GeoNet listing (``del insts[21181]; del insts[6919]``).
GEONET_DROPPED = (21181, 6919)


# --------------------------------------------------------------------------------------------- helpers


def eigen_crop_mask(height: int = NYU_HEIGHT, width: int = NYU_WIDTH) -> np.ndarray:
    """Boolean mask of the Eigen evaluation crop; only defined for 480x640 images."""
    if (height, width) != (NYU_HEIGHT, NYU_WIDTH):
        raise ValueError(f"the Eigen crop is defined for 480x640 NYU images, got {height}x{width}")
    mask = np.zeros((height, width), dtype=bool)
    r0, r1, c0, c1 = EIGEN_CROP
    mask[r0:r1, c0:c1] = True
    return mask


def depth_valid_mask(
    depth: np.ndarray, min_depth: float, max_depth: float, eval_crop: str | None
) -> np.ndarray:
    """``(depth > min_depth) & (depth < max_depth)`` intersected with the optional Eigen crop."""
    valid = np.isfinite(depth) & (depth > min_depth) & (depth < max_depth)
    if eval_crop == "eigen":
        valid &= eigen_crop_mask(*depth.shape)
    return valid


def read_depth_png_mm(path: Path) -> np.ndarray:
    """Decode a uint16 millimetre depth PNG to float32 metres (0 = no measurement)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read depth PNG {path} ({exc}); re-download or remove the file") from exc
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.uint32):
        raise DatasetError(
            f"depth PNG {path} is not a single-channel 16-bit image (got {arr.dtype}, shape {arr.shape}); "
            "regenerate it with the BTS conversion script"
        )
    return (arr.astype(np.float32) / 1000.0).astype(np.float32)


def read_splits_mat(path: Path) -> dict[str, np.ndarray]:
    """Return 1-based ``trainNdxs`` / ``testNdxs`` of the official ``splits.mat``."""
    import scipy.io

    require_path(path, "NYUv2 splits.mat", MAT_HOW)
    try:
        mat = scipy.io.loadmat(path)
        return {
            "train": np.asarray(mat["trainNdxs"]).reshape(-1).astype(np.int64),
            "test": np.asarray(mat["testNdxs"]).reshape(-1).astype(np.int64),
        }
    except Exception as exc:  # scipy raises several types for malformed files
        raise DatasetError(
            f"cannot read trainNdxs/testNdxs from {path} ({exc}); re-download splits.mat"
        ) from exc


class LabeledMat:
    """Lazy, picklable reader of ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5).

    h5py returns MATLAB arrays with reversed axes: ``images`` is (N, 3, 640, 480) and ``rawDepths``
    (N, 640, 480), so one image is ``images[i].transpose(2, 1, 0)`` -> (480, 640, 3) and one depth map
    ``rawDepths[i].T`` -> (480, 640). Indices here are 0-based positions in the file.
    """

    def __init__(self, path: Path):
        self.path = require_path(Path(path), "NYUv2 labeled file nyu_depth_v2_labeled.mat", MAT_HOW)
        self._file: Any = None
        self._pid = 0
        with self._open_new() as f:
            for key in ("images", "rawDepths"):
                if key not in f:
                    raise DatasetError(f"{self.path} has no '{key}' dataset; re-download the labeled .mat")
            n, c, w, h = f["images"].shape
            if c != 3 or f["rawDepths"].shape != (n, w, h):
                raise DatasetError(
                    f"{self.path} has unexpected shapes images={f['images'].shape}, "
                    f"rawDepths={f['rawDepths'].shape}; re-download the labeled .mat"
                )
            self.num_images = int(n)
            self.has_scenes = "sceneTypes" in f

    def _open_new(self) -> Any:
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetError(
                f"cannot open {self.path} as HDF5 / MATLAB v7.3 ({exc}); re-download nyu_depth_v2_labeled.mat"
            ) from exc

    def _h5(self) -> Any:
        if self._file is None or self._pid != os.getpid():  # never share an HDF5 handle across fork
            self._file = self._open_new()
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def image(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self._h5()["images"][i]).transpose(2, 1, 0)).astype(np.uint8)

    def depth(self, i: int, key: str = "rawDepths") -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self._h5()[key][i]).T).astype(np.float32)

    def scene(self, i: int) -> str:
        if not self.has_scenes:
            return ""
        f = self._h5()
        refs = f["sceneTypes"]
        ref = refs[0, i] if refs.shape[0] == 1 else refs[i, 0]
        return "".join(chr(int(c)) for c in np.asarray(f[ref]).ravel())


def _find_first(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _detect_layout(root: Path) -> str | None:
    if (root / LABELED_MAT).is_file() or (root / SPLITS_MAT).is_file():
        return "mat"  # a missing partner file is then reported with its full path
    if any(_find_first(root, names) for names in BTS_SPLIT_FILES.values()):
        return "bts"
    return None


def _read_bts_list(path: Path) -> list[tuple[str, str]]:
    entries = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] == "None":
            raise DatasetError(
                f"line {line_no} of {path} is not '<rgb> <depth> <focal>'; use the split file of BTS"
            )
        entries.append((fields[0].lstrip("/"), fields[1].lstrip("/")))
    return entries


def _bts_base(root: Path, split: str, first: tuple[str, str]) -> Path | None:
    for sub in BTS_BASE_DIRS[split]:
        base = (root / sub).resolve() if sub != "." else root
        if (base / first[0]).is_file():
            return base
    return None


# ------------------------------------------------------------------------------------------ nyu_depth


class NYUDepth:
    """NYUv2 monocular depth, Eigen split (654 test images) or the train split.

    Options: ``layout`` ('auto' | 'mat' | 'bts'), ``min_depth`` (1e-3 m), ``max_depth`` (10 m),
    ``eval_crop`` ('eigen' | None), ``depth_source`` ('raw' | 'filled', mat layout only: ``rawDepths``
    with holes as in BTS, or the in-painted ``depths``).
    """

    splits = ("train", "test")

    def __init__(
        self,
        root: Path | str,
        split: str,
        layout: str = "auto",
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eval_crop: str | None = "eigen",
        depth_source: str = "raw",
    ):
        self.root = require_path(Path(root), "NYUv2 depth root", f"{MAT_HOW}, or {BTS_HOW}")
        if split not in self.splits:
            raise DatasetError(f"unknown NYUv2 depth split '{split}'; choose one of {', '.join(self.splits)}")
        if eval_crop not in ("eigen", None):
            raise DatasetError(f"unknown eval_crop '{eval_crop}'; use 'eigen' or None")
        if depth_source not in ("raw", "filled"):
            raise DatasetError(f"unknown depth_source '{depth_source}'; use 'raw' or 'filled'")
        if layout == "auto":
            detected = _detect_layout(self.root)
            if detected is None:
                raise DatasetError(
                    f"no NYUv2 layout found at {self.root} (neither {LABELED_MAT} + {SPLITS_MAT} nor a BTS "
                    f"split file); {MAT_HOW}, or {BTS_HOW}"
                )
            layout = detected
        if layout not in ("mat", "bts"):
            raise DatasetError(f"unknown NYUv2 layout '{layout}'; use 'auto', 'mat' or 'bts'")
        self.name = "nyu_depth"
        self.split = split
        self.layout = layout
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eval_crop = eval_crop
        self.depth_source = depth_source
        self._mat: LabeledMat | None = None
        self._entries: list[Any]
        if layout == "mat":
            self._mat = LabeledMat(self.root / LABELED_MAT)
            idx = read_splits_mat(self.root / SPLITS_MAT)[split]
            if idx.size and (idx.min() < 1 or idx.max() > self._mat.num_images):
                raise DatasetError(
                    f"{self.root / SPLITS_MAT} holds indices outside 1..{self._mat.num_images}; "
                    "re-download splits.mat"
                )
            self._entries = sorted(int(i) - 1 for i in idx)  # splits.mat is 1-based
        else:
            list_path = _find_first(self.root, BTS_SPLIT_FILES[split])
            if list_path is None:
                raise DatasetError(
                    f"BTS split file {self.root / BTS_SPLIT_FILES[split][0]} not found; {BTS_HOW}"
                )
            entries = _read_bts_list(list_path)
            if not entries:
                raise DatasetError(f"split file {list_path} is empty; {BTS_HOW}")
            base = _bts_base(self.root, split, entries[0])
            if base is None:
                missing = self.root / BTS_BASE_DIRS[split][0] / entries[0][0]
                raise DatasetError(
                    f"NYUv2 image {missing} (first entry of {list_path.name}) not found; {BTS_HOW}"
                )
            self._base = base
            self._entries = entries
        if layout == "bts":
            source = "uint16 millimetre PNGs"
        else:
            source = "rawDepths (holes = 0)" if depth_source == "raw" else "in-painted depths"
        notes = (
            f"NYUv2 {split} ({layout} layout); depth in metres from {source}; "
            f"valid = {self.min_depth:g} < d < {self.max_depth:g}"
            + (" within the Eigen crop rows 45:471, cols 41:601" if eval_crop == "eigen" else "")
        )
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            depth_range=(self.min_depth, self.max_depth),
            notes=notes,
            extra={
                "layout": layout,
                "eval_crop": eval_crop,
                "crop_box_rows_cols": EIGEN_CROP if eval_crop == "eigen" else None,
                "min_depth": self.min_depth,
                "max_depth": self.max_depth,
                "depth_source": depth_source if layout == "mat" else "png_mm",
                "num_images": len(self._entries),
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Sample:
        if self._mat is not None:
            i0 = self._entries[index]
            image = self._mat.image(i0)
            depth = self._mat.depth(i0, "rawDepths" if self.depth_source == "raw" else "depths")
            scene = self._mat.scene(i0)
            sample_id = f"{scene}/rgb_{i0:05d}" if scene else f"rgb_{i0:05d}"
            where = self._mat.path
        else:
            rgb_rel, depth_rel = self._entries[index]
            image = read_rgb(self._base / rgb_rel)
            depth_path = self._base / depth_rel
            if not depth_path.is_file():
                raise DatasetError(f"NYUv2 depth {depth_path} not found; {BTS_HOW}")
            depth = read_depth_png_mm(depth_path)
            sample_id = rgb_rel.rsplit(".", 1)[0]
            where = depth_path
        if image.shape[:2] != depth.shape:
            raise DatasetError(f"image and depth sizes differ for {where}; re-extract the sample")
        if self.eval_crop == "eigen" and depth.shape != (NYU_HEIGHT, NYU_WIDTH):
            raise DatasetError(f"{where} is not 480x640, so the Eigen crop is undefined; use eval_crop=None")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        return {
            "id": sample_id,
            "image": image,
            "depth": depth,
            "depth_valid": depth_valid_mask(depth, self.min_depth, self.max_depth, self.eval_crop),
            "intrinsics": NYU_INTRINSICS.copy(),
        }


def check_nyu_depth(root: Path | str, strict: bool = False) -> list[str]:
    """Problems with a NYUv2 depth root (empty when usable); counts are verified for full releases."""
    root = Path(root)
    if not root.is_dir():
        return [f"NYUv2 depth root {root} does not exist"]
    layout = _detect_layout(root)
    if layout is None:
        return [f"no NYUv2 layout at {root}: need {LABELED_MAT} + {SPLITS_MAT}, or BTS split files"]
    problems: list[str] = []
    if layout == "mat":
        try:
            mat = LabeledMat(root / LABELED_MAT)
            splits = read_splits_mat(root / SPLITS_MAT)
        except DatasetError as exc:
            return [str(exc)]
        for split, idx in splits.items():
            if idx.size == 0 or idx.min() < 1 or idx.max() > mat.num_images:
                problems.append(f"{root / SPLITS_MAT}: {split} indices outside 1..{mat.num_images}")
        full = strict or splits["test"].size == FULL_COUNTS["test"]
        if full:
            for key, found in (
                ("images", mat.num_images),
                ("train", splits["train"].size),
                ("test", splits["test"].size),
            ):
                if found != FULL_COUNTS[key]:
                    problems.append(f"NYUv2 {key}: expected {FULL_COUNTS[key]}, found {found}")
        return problems
    counts = {}
    for split, names in BTS_SPLIT_FILES.items():
        list_path = _find_first(root, names)
        if list_path is None:
            problems.append(f"BTS {split} split file {root / names[0]} is missing")
            continue
        try:
            entries = _read_bts_list(list_path)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        counts[split] = len(entries)
        if not entries:
            problems.append(f"{list_path} is empty")
            continue
        base = _bts_base(root, split, entries[0])
        if base is None:
            problems.append(f"{root / BTS_BASE_DIRS[split][0] / entries[0][0]} is missing")
            continue
        missing = [p for e in entries for p in (base / e[0], base / e[1]) if not p.is_file()]
        if missing:
            problems.append(f"{len(missing)} files of {list_path.name} are missing, e.g. {missing[0]}")
    if strict or counts.get("test") == FULL_COUNTS["test"]:
        for split, key in (("test", "test"), ("train", "bts_train")):
            if split in counts and counts[split] != FULL_COUNTS[key]:
                problems.append(
                    f"NYUv2 BTS {split} list: expected {FULL_COUNTS[key]} entries, found {counts[split]}"
                )
    return problems


# ---------------------------------------------------------------------------------------- nyu_normals


def _fair_file(root: Path, name: str) -> Path:
    """FAIR metadata file, either under ``surfacenormal_metadata/`` (as unzipped) or flattened at root."""
    for candidate in (root / "surfacenormal_metadata" / name, root / name):
        if candidate.is_file():
            return candidate
    return root / "surfacenormal_metadata" / name


def _read_sn40(path: Path) -> list[int]:
    """0-based NYU indices of a FAIR ``{train,test}_SN40.json`` (``img`` = '%06d_rgb.jpg', 1-based)."""
    require_path(path, f"FAIR split file {path.name}", FAIR_HOW)
    try:
        records = json.loads(path.read_text())
        return [int(str(rec["img"]).split("_")[0]) - 1 for rec in records]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{path} is not a list of {{'img': '000001_rgb.jpg', ...}} records ({exc})"
        ) from exc


def _geonet_files(geonet_dir: Path) -> list[Path]:
    """GeoNet ``.mat`` files, sorted, minus the two sorted positions probe3d drops (when present)."""
    files = sorted(p for p in geonet_dir.iterdir() if p.suffix == ".mat")
    for pos in GEONET_DROPPED:  # same order as probe3d, so positions refer to the same files
        if pos < len(files):
            del files[pos]
    return files


class NYUNormals:
    """NYUv2 surface normals as probed by probe3d (El Banani et al., 2024).

    ``test``: the 654 images of FAIR's ``test_SN40.json`` with Ladicky et al. normals from
    ``all_normals.pklz`` and images / ``rawDepths`` from the labeled ``.mat``.
    ``train`` / ``valid`` / ``trainval``: GeoNet per-frame ``.mat`` files (``img``, ``depth``,
    ``norm``), every 20th sorted file held out as ``valid`` (as probe3d).

    Normals are converted from the file frame with ``frame_signs`` (ours = signs * file, default
    (-1, -1, -1), see docs/datasets/nyu.md). ``normals_valid`` = 0 < depth <= 10 m (probe3d zeroes
    depth > 10 m, then uses depth > 0) and a non-zero GT vector. ``center_crop`` keeps columns 80:560
    (probe3d's 480x480 setting). ``cache_dir`` stores the decoded test normals as ``.npy`` and
    memory-maps them (the pklz holds all 1449 maps and must be unpickled whole).
    """

    splits = ("train", "valid", "trainval", "test")

    def __init__(
        self,
        root: Path | str,
        split: str,
        frame_signs: tuple[int, int, int] = (-1, -1, -1),
        center_crop: bool = False,
        geonet_dir: Path | str | None = None,
        cache_dir: Path | str | None = None,
        max_depth: float = 10.0,
    ):
        self.root = require_path(Path(root), "NYUv2 normals root", f"{MAT_HOW}, then {FAIR_HOW}")
        if split not in self.splits:
            raise DatasetError(
                f"unknown NYUv2 normals split '{split}'; choose one of {', '.join(self.splits)}"
            )
        signs = np.asarray(frame_signs, dtype=np.float32).reshape(-1)
        if signs.shape != (3,) or not np.all(np.abs(signs) == 1):
            raise DatasetError(f"frame_signs must be three values of +1 or -1, got {frame_signs}")
        self.name = "nyu_normals"
        self.split = split
        self.frame_signs = signs
        self.center_crop = bool(center_crop)
        self.max_depth = float(max_depth)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._normals: Any = None
        self._mat: LabeledMat | None = None
        if split == "test":
            self._mat = LabeledMat(self.root / LABELED_MAT)
            self._pklz = require_path(
                _fair_file(self.root, "all_normals.pklz"), "FAIR all_normals.pklz", FAIR_HOW
            )
            self._entries: list[Any] = _read_sn40(_fair_file(self.root, "test_SN40.json"))
            bad = [i for i in self._entries if not 0 <= i < self._mat.num_images]
            if bad:
                raise DatasetError(
                    f"test_SN40.json names image {bad[0] + 1} outside the labeled .mat; re-download"
                )
            source = "Ladicky et al. normals (FAIR all_normals.pklz), labeled-set rawDepths"
        else:
            gdir = Path(geonet_dir) if geonet_dir is not None else self.root / "nyu_geonet"
            require_path(gdir, "GeoNet training folder", f"create it and {GEONET_HOW}")
            files = _geonet_files(gdir)
            if not files:
                raise DatasetError(f"GeoNet folder {gdir} holds no .mat files; {GEONET_HOW}")
            if split == "train":
                files = [f for i, f in enumerate(files) if i % 20 != 0]
            elif split == "valid":
                files = [f for i, f in enumerate(files) if i % 20 == 0]
            self._entries = files
            source = "GeoNet normals (Qi et al. 2018, from Bansal et al.)"
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            depth_range=(0.0, self.max_depth),
            notes=(
                f"NYUv2 normals {split}: {source}; camera frame x right, y down, z forward, pointing to "
                f"the camera; ours = {tuple(int(s) for s in signs)} * file; "
                f"valid = 0 < depth <= {self.max_depth:g}"
                + ("; 480x480 centre crop" if self.center_crop else "")
            ),
            extra={
                "frame_signs": tuple(int(s) for s in signs),
                "center_crop": self.center_crop,
                "num_images": len(self._entries),
                "protocol": "probe3d",
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_normals"] = None  # reloaded (or memory-mapped) in each worker
        return state

    # -- test-set normals -------------------------------------------------------------------------
    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"nyu_normals_{self.split}_{len(self._entries)}.npy"

    def _load_test_normals(self) -> Any:
        if self._normals is not None:
            return self._normals
        cache = self._cache_path()
        if cache is not None and cache.is_file():
            self._normals = np.load(cache, mmap_mode="r")
            return self._normals
        try:
            with gzip.open(self._pklz, "rb") as f:
                data = pickle.load(f, encoding="latin1")
            all_normals = data["all_normals"]
        except Exception as exc:  # gzip/pickle raise many types for a corrupt file
            raise DatasetError(
                f"cannot unpickle 'all_normals' from {self._pklz} ({exc}); re-download it"
            ) from exc
        names = data.get("all_filenames")
        if names is not None:
            row_of = {int(str(name)) - 1: row for row, name in enumerate(names)}
        else:
            row_of = {i: i for i in range(len(all_normals))}
        missing = [i for i in self._entries if i not in row_of]
        if missing:
            raise DatasetError(f"{self._pklz} has no normals for NYU image {missing[0] + 1}; re-download it")
        selected = np.stack([np.asarray(all_normals[row_of[i]], dtype=np.float32) for i in self._entries])
        del data, all_normals
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, selected)
            selected = np.load(cache, mmap_mode="r")
        self._normals = selected
        return selected

    # -- samples ----------------------------------------------------------------------------------
    def _convert(self, normals_file: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.asarray(normals_file, dtype=np.float32) * self.frame_signs
        length = np.linalg.norm(n, axis=-1)
        valid = (depth > 0) & (depth <= self.max_depth) & np.isfinite(length) & (length > 0.5)
        n = np.where(valid[..., None], n / np.where(valid, length, 1.0)[..., None], 0.0).astype(np.float32)
        return n, valid

    def __getitem__(self, index: int) -> Sample:
        if self._mat is not None:
            i0 = self._entries[index]
            image = self._mat.image(i0)
            depth = self._mat.depth(i0, "rawDepths")
            normals_file = self._load_test_normals()[index]
            sample_id = f"{i0 + 1:06d}"
            where: Path = self._pklz
        else:
            path = self._entries[index]
            image, depth, normals_file = self._read_geonet(path)
            sample_id = path.stem
            where = path
        if normals_file.shape != depth.shape + (3,) or image.shape[:2] != depth.shape:
            raise DatasetError(
                f"image, depth and normals sizes differ for {where} (index {index}); re-download"
            )
        depth = np.where(np.isfinite(depth) & (depth > 0) & (depth <= self.max_depth), depth, 0.0)
        depth = depth.astype(np.float32)
        normals, valid = self._convert(normals_file, depth)
        K = NYU_INTRINSICS.copy()
        if self.center_crop:
            image, depth, normals, valid = (a[:, 80:-80] for a in (image, depth, normals, valid))
            K[0, 2] -= 80
        return {
            "id": sample_id,
            "image": np.ascontiguousarray(image),
            "depth": np.ascontiguousarray(depth),
            "depth_valid": np.ascontiguousarray(depth > 0),
            "normals": np.ascontiguousarray(normals),
            "normals_valid": np.ascontiguousarray(valid),
            "intrinsics": K,
        }

    @staticmethod
    def _read_geonet(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import scipy.io

        try:
            mat = scipy.io.loadmat(path)
            img = np.asarray(mat["img"], dtype=np.float64)[:NYU_HEIGHT, :NYU_WIDTH]
            depth = np.asarray(mat["depth"], dtype=np.float32)[:NYU_HEIGHT, :NYU_WIDTH]
            norm = np.asarray(mat["norm"], dtype=np.float32)[:NYU_HEIGHT, :NYU_WIDTH]
        except Exception as exc:  # scipy raises several types for malformed files
            raise DatasetError(
                f"cannot read img/depth/norm from GeoNet file {path} ({exc}); re-download it"
            ) from exc
        image = np.clip(np.rint(img + 2.0 * GEONET_MEAN), 0, 255).astype(np.uint8)
        return image, depth, norm

    def frame_agreement(self, index: int) -> float:
        """Mean cosine between the converted GT normals and normals derived from the sample's depth.

        Close to +1 when ``frame_signs`` maps the file frame to ours; negative values mean an axis
        is flipped. Useful to confirm the frame on the real data (uses the NYU Kinect intrinsics).
        """
        sample = self[index]
        derived, ok = normals_from_depth(sample["depth"], sample["intrinsics"], sample["depth"] > 0)
        ok &= sample["normals_valid"]
        if not ok.any():
            return float("nan")
        return float(np.mean(np.sum(derived[ok] * sample["normals"][ok], axis=-1)))


def check_nyu_normals(root: Path | str, strict: bool = False) -> list[str]:
    """Problems with a NYUv2 normals root (labeled .mat, FAIR metadata, GeoNet folder)."""
    root = Path(root)
    if not root.is_dir():
        return [f"NYUv2 normals root {root} does not exist"]
    problems: list[str] = []
    try:
        mat = LabeledMat(root / LABELED_MAT)
    except DatasetError as exc:
        problems.append(str(exc))
        mat = None
    pklz = _fair_file(root, "all_normals.pklz")
    if not pklz.is_file():
        problems.append(f"FAIR normals {pklz} is missing")
    try:
        test = _read_sn40(_fair_file(root, "test_SN40.json"))
        if mat is not None and any(not 0 <= i < mat.num_images for i in test):
            problems.append("test_SN40.json names images outside the labeled .mat")
        if (strict or len(test) == FULL_COUNTS["test"]) and mat is not None and mat.num_images != 1449:
            problems.append(f"NYUv2 labeled .mat: expected 1449 images, found {mat.num_images}")
        if strict and len(test) != FULL_COUNTS["test"]:
            problems.append(f"test_SN40.json: expected {FULL_COUNTS['test']} images, found {len(test)}")
    except DatasetError as exc:
        problems.append(str(exc))
    gdir = root / "nyu_geonet"
    if not gdir.is_dir():
        problems.append(f"GeoNet training folder {gdir} is missing")
    elif not any(p.suffix == ".mat" for p in gdir.iterdir()):
        problems.append(f"GeoNet training folder {gdir} holds no .mat files")
    return problems


register_loader(
    NYUDepth,
    name="nyu_depth",
    description="NYU Depth v2 monocular depth, Eigen split (654 test images), RMSE in metres",
    default_dirname="nyu_depth_v2",
    homepage="https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html",
    licence="no licence stated by the authors (research use)",
    check=check_nyu_depth,
    how_to_get=(
        "Put nyu_depth_v2_labeled.mat and splits.mat (horatio.cs.nyu.edu/mit/silberman/) in the root, or "
        "use the BTS layout (sync/, official_splits/test/, nyudepthv2_{train,test}_files_with_gt.txt)."
    ),
)

register_loader(
    NYUNormals,
    name="nyu_normals",
    description="NYU Depth v2 surface normals (probe3d: Ladicky GT on 654 test images, GeoNet train)",
    default_dirname="nyu_depth_v2",  # one NYU folder serves both datasets
    homepage="https://github.com/facebookresearch/fair_self_supervision_benchmark",
    licence="no licence stated (NYUv2 labeled set, FAIR metadata, GeoNet data)",
    check=check_nyu_normals,
    how_to_get=(
        "Put nyu_depth_v2_labeled.mat in the root, unzip dl.fbaipublicfiles.com/"
        "fair_self_supervision_benchmark/nyuv2_surfacenormal_metadata.zip there, and merge GeoNet's "
        "data1/ and data2/ .mat files into nyu_geonet/."
    ),
)
