"""SPair-71k (Min et al., 2019): semantic keypoint correspondence between image pairs.

The index comes from the official ``Layout/<size>/<split>.txt`` lists of pair names
(``<pair_id>-<src>-<trg>:<category>``); each pair is read lazily from
``PairAnnotation/<split>/<pair_name>.json``. See ``docs/datasets/spair.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tips_bench.data.base import (
    DatasetInfo,
    Sample,
    read_rgb,
    read_split_file,
    register_loader,
    require_path,
)
from tips_bench.errors import DatasetError

HOW = (
    "download http://cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz and extract it so that "
    "<root>/PairAnnotation and <root>/JPEGImages exist"
)
#: The 18 categories (PASCAL VOC minus diningtable and sofa), in alphabetical order = label index.
CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip
SPLIT_DIRS = {"trn": "trn", "train": "trn", "val": "val", "valid": "val", "test": "test"}
#: Pairs per split of the full release (Layout/large): 53,340 / 5,384 / 12,234 (sum 70,958 = paper total).
FULL_COUNTS = {"trn": 53340, "val": 5384, "test": 12234}


def parse_pair_name(name: str) -> tuple[str, str, str, str]:
    """(pair_id, src image, trg image, category) of ``000001-2008_000585-2008_004431:aeroplane``."""
    try:
        stem, category = name.split(":")
        pair_id, src, trg = stem.split("-")
    except ValueError as exc:
        raise DatasetError(f"'{name}' is not an SPair pair name '<id>-<src>-<trg>:<category>'") from exc
    return pair_id, src, trg, category


def _points(value: Any, what: str, path: Path) -> np.ndarray:
    """(K, 2) float array; missing (null) keypoints become NaN."""
    try:
        rows = [[np.nan, np.nan] if p is None else [float(p[0]), float(p[1])] for p in value]
    except (TypeError, IndexError, ValueError) as exc:
        raise DatasetError(f"{path}: '{what}' is not a list of [x, y] keypoints ({exc})") from exc
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


class SPair:
    """SPair-71k keypoint pairs.

    Options: ``layout`` ('large' = the full split lists, 'small'), ``category`` (one category or None).
    Samples carry the pair keys of base.py plus ``category``, ``label`` and ``viewpoint_variation``.
    """

    splits = ("trn", "val", "test")

    def __init__(self, root: Path | str, split: str, layout: str = "large", category: str | None = None):
        self.root = require_path(Path(root), "SPair-71k root", HOW)
        if split not in SPLIT_DIRS:
            raise DatasetError(f"unknown SPair-71k split '{split}'; choose one of {', '.join(self.splits)}")
        if layout not in ("large", "small"):
            raise DatasetError(f"unknown SPair-71k layout '{layout}'; use 'large' or 'small'")
        if category is not None and category not in CATEGORIES:
            raise DatasetError(
                f"unknown SPair-71k category '{category}'; choose one of {', '.join(CATEGORIES)}"
            )
        self.name = "spair"
        self.split = SPLIT_DIRS[split]
        self._pairs_dir = require_path(
            self.root / "PairAnnotation" / self.split, "SPair-71k pair annotations", HOW
        )
        require_path(self.root / "JPEGImages", "SPair-71k image folder", HOW)
        names = read_split_file(
            self.root / "Layout" / layout / f"{self.split}.txt", "SPair-71k split list", HOW
        )
        for name in names:
            parse_pair_name(name)
        if category is not None:
            names = [n for n in names if parse_pair_name(n)[3] == category]
        self._names = names
        self.info = DatasetInfo(
            name=self.name,
            split=self.split,
            num_classes=len(CATEGORIES),
            class_names=CATEGORIES,
            notes=(
                f"SPair-71k {self.split} pairs (Layout/{layout}); points (x, y) in pixels of the original "
                "images; "
                "PCK@0.1 threshold = 0.1 * max side of bbox_b (trg_bndbox)"
            ),
            extra={"layout": layout, "category": category, "num_pairs": len(names)},
        )

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> Sample:
        name = self._names[index]
        _, src, trg, category = parse_pair_name(name)
        path = self._pairs_dir / f"{name}.json"
        require_path(path, "SPair-71k pair annotation", HOW)
        try:
            ann = json.loads(path.read_text())
            src_kps, trg_kps = ann["src_kps"], ann["trg_kps"]
            bbox = np.asarray(ann["trg_bndbox"], dtype=np.float32).reshape(4)
            src_name, trg_name = ann.get("src_imname", f"{src}.jpg"), ann.get("trg_imname", f"{trg}.jpg")
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path} is not an SPair pair annotation ({exc}); re-download the archive"
            ) from exc
        points_a, points_b = _points(src_kps, "src_kps", path), _points(trg_kps, "trg_kps", path)
        if points_a.shape != points_b.shape:
            raise DatasetError(f"{path}: src_kps and trg_kps differ in length; re-download the archive")
        image_a = read_rgb(self.root / "JPEGImages" / category / src_name)
        image_b = read_rgb(self.root / "JPEGImages" / category / trg_name)
        valid = np.isfinite(points_a).all(1) & np.isfinite(points_b).all(1)
        valid &= (points_a >= 0).all(1) & (points_b >= 0).all(1)
        return {
            "id": name,
            "image_a": image_a,
            "image_b": image_b,
            "points_a": np.where(valid[:, None], points_a, -1.0).astype(np.float32),
            "points_b": np.where(valid[:, None], points_b, -1.0).astype(np.float32),
            "points_valid": valid,
            "bbox_b": bbox,
            "category": category,
            "label": CATEGORIES.index(category),
            "viewpoint_variation": int(ann.get("viewpoint_variation", -1)),
        }


def check_spair(root: Path | str, strict: bool = False) -> list[str]:
    """Problems with an SPair-71k root; pair and image files of every listed pair must exist."""
    root = Path(root)
    if not root.is_dir():
        return [f"SPair-71k root {root} does not exist"]
    problems: list[str] = []
    for sub in ("JPEGImages", "PairAnnotation", "Layout"):
        if not (root / sub).is_dir():
            problems.append(f"SPair-71k folder {root / sub} is missing")
    if problems:
        return problems
    counts = {}
    for split in SPair.splits:
        listing = root / "Layout" / "large" / f"{split}.txt"
        if not listing.is_file():
            problems.append(f"SPair-71k split list {listing} is missing")
            continue
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        counts[split] = len(names)
        missing: list[Path] = []
        for name in names:
            try:
                _, src, trg, category = parse_pair_name(name)
            except DatasetError as exc:
                problems.append(f"{listing}: {exc}")
                break
            for path in (
                root / "PairAnnotation" / split / f"{name}.json",
                root / "JPEGImages" / category / f"{src}.jpg",
                root / "JPEGImages" / category / f"{trg}.jpg",
            ):
                if not path.is_file():
                    missing.append(path)
        if missing:
            problems.append(f"{len(missing)} files listed by {listing.name} are missing, e.g. {missing[0]}")
    categories = {p.name for p in (root / "JPEGImages").iterdir() if p.is_dir()}
    if strict or len(categories) == len(CATEGORIES):
        for split, expected in FULL_COUNTS.items():
            if split in counts and counts[split] != expected:
                problems.append(f"SPair-71k {split}: expected {expected} pairs, found {counts[split]}")
    return problems


register_loader(
    SPair,
    name="spair",
    description="SPair-71k semantic keypoint pairs (18 categories), PCK@0.1 of the target bbox",
    default_dirname="SPair-71k",
    homepage="https://cvlab.postech.ac.kr/research/SPair-71k/",
    licence="not stated by the authors (images from PASCAL VOC / Flickr terms); research use",
    check=check_spair,
    how_to_get=(
        "Download cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz and extract it; the root "
        "holds JPEGImages/, PairAnnotation/{trn,val,test}/, ImageAnnotation/ and Layout/."
    ),
)
