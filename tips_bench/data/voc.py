"""PASCAL VOC 2012 semantic segmentation (21 classes), optionally with the SBD "aug" labels.

Layout (``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2012``)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png            palette PNG, 0..20, 255 = void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png         trainaug only (mmseg voc_aug.py output)
    VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt        trainaug only (mmseg voc_aug.py output)
    VOCdevkit/VOCaug/dataset/{cls/<id>.mat,train.txt,val.txt}   SBD, read directly without conversion

``trainaug`` (10,582) = ``train.txt`` ids labelled from ``SegmentationClass`` plus the SBD-only ids
labelled from ``SegmentationClassAug`` (or, when that folder is absent, from SBD ``cls/<id>.mat``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tips_bench.data.base import (
    IGNORE_INDEX,
    DatasetInfo,
    Sample,
    read_rgb,
    read_split_file,
    register_loader,
    require_path,
)
from tips_bench.errors import DatasetError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
"""The 21 official VOC class names, in label order (0 = background)."""

VOC_PROMPT_NAMES: tuple[str, ...] = tuple(
    {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}.get(n, n)
    for n in VOC_CLASSES
)
"""Readable names for text prompts (zero-shot segmentation), same order as :data:`VOC_CLASSES`."""

VOC_SPLIT_SIZES: dict[str, int] = {"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582}

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
SBD_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
_HOW_TO_GET = f"download {VOC_URL} and unpack it so that VOCdevkit/VOC2012/JPEGImages exists under the root"
_HOW_TO_GET_AUG = (
    f"for trainaug download SBD ({SBD_URL}), move benchmark_RELEASE/dataset to VOCdevkit/VOCaug/dataset and "
    "optionally run mmsegmentation's tools/dataset_converters/voc_aug.py"
)

SUBSET_MAX = 32
"""``check`` treats splits with at most this many entries as deliberate subsets (fixtures, smoke tests)."""


def voc_palette(num: int = 256) -> list[int]:
    """The standard VOC colour map as a flat PIL palette (``num`` RGB triples)."""
    palette: list[int] = []
    for index in range(num):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def read_index_png(path: Path) -> np.ndarray:
    """Decode a label PNG stored as indices (mode ``P`` or ``L``) to uint8 (H, W) with PIL.

    The palette of a ``P`` image is ignored: the stored indices are the labels. RGB-colour label
    images (e.g. re-saved by OpenCV) are rejected, since their colours are not class indices.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise DatasetError(
                    f"label image {path} has mode {img.mode}, expected an 8-bit index PNG (mode P or L); "
                    "re-extract the original annotation file"
                )
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read label image {path} ({exc}); re-download or remove the file") from exc


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 → 255, x → x − 1, and 255 stays 255 (int64 result)."""
    seg = label.astype(np.int64) - 1
    seg[label == 0] = IGNORE_INDEX
    seg[seg == IGNORE_INDEX - 1] = IGNORE_INDEX
    return seg


def read_sbd_mat(path: Path) -> np.ndarray:
    """Read ``GTcls.Segmentation`` (uint8 H×W, 0..20) from an SBD ``cls/<id>.mat`` file (MATLAB v5)."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path), variable_names=["GTcls"])
        return np.asarray(data["GTcls"][0]["Segmentation"][0], dtype=np.uint8)
    except (OSError, ValueError, KeyError, IndexError, TypeError, NotImplementedError) as exc:
        raise DatasetError(f"cannot read SBD label {path} ({exc}); re-download SBD benchmark.tgz") from exc


def resolve_voc_dir(root: Path, year: str) -> Path:
    """Find ``VOC<year>`` given a folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC<year>``."""
    for candidate in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(
        f"PASCAL VOC{year} not found at {root / 'VOCdevkit' / f'VOC{year}'} (nor at {root / f'VOC{year}'} or "
        f"{root} itself: no JPEGImages folder); point the root at the folder holding VOCdevkit"
    )


def list_stems(folder: Path, suffix: str) -> set[str]:
    """File stems in ``folder`` with ``suffix`` (one directory listing, no per-file stat)."""
    with os.scandir(folder) as entries:
        return {e.name[: -len(suffix)] for e in entries if e.name.endswith(suffix)}


def require_members(ids: list[str], present: set[str], folder: Path, suffix: str, how: str) -> None:
    """Raise naming the first id of ``ids`` whose file ``folder/<id><suffix>`` is missing."""
    missing = [i for i in ids if i not in present]
    if missing:
        raise DatasetError(
            f"{len(missing)} listed file(s) missing, first {folder / (missing[0] + suffix)}; {how}"
        )


def find_sbd(voc_dir: Path, root: Path) -> Path | None:
    """SBD's ``dataset`` folder next to ``VOC2012`` (``VOCdevkit/VOCaug``) or under ``root``, else None."""
    for candidate in (voc_dir.parent / "VOCaug", root / "VOCaug", root / "benchmark_RELEASE"):
        if (candidate / "dataset" / "cls").is_dir():
            return candidate / "dataset"
    return None


def count_problem(what: str, found: int, expected: int, expect_full: bool | None = None) -> list[str]:
    """A problem line when a split's count differs from the full release.

    ``expect_full`` None (auto) accepts tiny subsets of at most :data:`SUBSET_MAX` items (fixtures, smoke
    tests) and flags any other mismatch; True flags every mismatch; False never compares counts.
    """
    if found == expected or expect_full is False or (expect_full is None and 0 < found <= SUBSET_MAX):
        return []
    return [f"{what}: found {found:,} items, the full release has {expected:,}"]


class VOCSegDataset:
    """PASCAL VOC 2012 segmentation; ``split`` in train, val, trainval, trainaug.

    Options: ``sbd_root`` = folder holding SBD's ``dataset/`` (default: ``VOCdevkit/VOCaug``, then
    ``<root>/VOCaug``, then ``<root>/benchmark_RELEASE``); used for trainaug only.
    """

    name = "voc"
    splits = ("train", "val", "trainval", "trainaug")

    def __init__(self, root: Path | str, split: str, *, sbd_root: Path | str | None = None):
        if split not in self.splits:
            raise DatasetError(f"unknown VOC split {split!r}; choose one of {', '.join(self.splits)}")
        self.root = Path(root)
        self.split = split
        self.base = resolve_voc_dir(self.root, "2012")
        image_dir = require_path(self.base / "JPEGImages", "VOC JPEGImages folder", _HOW_TO_GET)
        label_dir = require_path(self.base / "SegmentationClass", "VOC SegmentationClass folder", _HOW_TO_GET)
        sets = self.base / "ImageSets" / "Segmentation"
        images = list_stems(image_dir, ".jpg")
        labels = list_stems(label_dir, ".png")

        # (id, label path, label kind) per item; kind "png" or "mat".
        items: list[tuple[str, Path, str]] = []
        official = "train" if split == "trainaug" else split
        ids = read_split_file(sets / f"{official}.txt", f"VOC {official} split file", _HOW_TO_GET)
        require_members(ids, labels, label_dir, ".png", _HOW_TO_GET)
        items += [(i, label_dir / f"{i}.png", "png") for i in ids]
        aug_source = ""
        if split == "trainaug":
            aug_items, aug_source = self._aug_items(sets, set(ids), sbd_root)
            items = sorted(items + aug_items)
        require_members([i for i, _, _ in items], images, image_dir, ".jpg", _HOW_TO_GET)

        self._image_dir = image_dir
        self._items = items
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            num_classes=len(VOC_CLASSES),
            class_names=VOC_CLASSES,
            notes="PASCAL VOC 2012 SegmentationClass palette PNG decoded as indices; 255 = void (ignored).",
            extra={"prompt_names": VOC_PROMPT_NAMES, "aug_source": aug_source},
        )

    def _aug_items(
        self, sets: Path, train_ids: set[str], sbd_root: Path | str | None
    ) -> tuple[list[tuple[str, Path, str]], str]:
        """The SBD-only ids of trainaug with their label files, and a word on where they come from."""
        sbd = self._find_sbd(sbd_root)
        aug_txt = sets / "aug.txt"
        if aug_txt.is_file():
            aug_ids = read_split_file(aug_txt, "VOC aug split file", _HOW_TO_GET_AUG)
        elif sbd is not None:
            sbd_ids: set[str] = set()
            for name in ("train.txt", "val.txt"):
                sbd_ids.update(read_split_file(sbd / name, f"SBD {name}", _HOW_TO_GET_AUG))
            val_ids = read_split_file(sets / "val.txt", "VOC val split file", _HOW_TO_GET)
            aug_ids = sorted(sbd_ids - train_ids - set(val_ids))
        else:
            raise DatasetError(
                f"VOC aug split file not found at {aug_txt} and no SBD folder found; {_HOW_TO_GET_AUG}"
            )
        aug_ids = [i for i in aug_ids if i not in train_ids]
        aug_dir = self.base / "SegmentationClassAug"
        if aug_dir.is_dir():
            require_members(aug_ids, list_stems(aug_dir, ".png"), aug_dir, ".png", _HOW_TO_GET_AUG)
            return [(i, aug_dir / f"{i}.png", "png") for i in aug_ids], "SegmentationClassAug"
        if sbd is None:
            raise DatasetError(
                f"VOC SegmentationClassAug folder not found at {aug_dir} and no SBD folder found; "
                f"{_HOW_TO_GET_AUG}"
            )
        cls_dir = require_path(sbd / "cls", "SBD cls folder", _HOW_TO_GET_AUG)
        require_members(aug_ids, list_stems(cls_dir, ".mat"), cls_dir, ".mat", _HOW_TO_GET_AUG)
        return [(i, cls_dir / f"{i}.mat", "mat") for i in aug_ids], "SBD cls .mat"

    def _find_sbd(self, sbd_root: Path | str | None) -> Path | None:
        """SBD's ``dataset`` folder, or None when absent (an explicit ``sbd_root`` must exist)."""
        if sbd_root is not None:
            base = Path(sbd_root)
            dataset = base if (base / "cls").is_dir() else base / "dataset"
            return require_path(dataset / "cls", "SBD cls folder", _HOW_TO_GET_AUG).parent
        return find_sbd(self.base, self.root)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        image_id, label_path, kind = self._items[index]
        image = read_rgb(self._image_dir / f"{image_id}.jpg")
        label = read_index_png(label_path) if kind == "png" else read_sbd_mat(label_path)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"label {label_path} is {label.shape} but its image is {image.shape[:2]}")
        return {"id": image_id, "image": image, "seg": label.astype(np.int64)}


def check_voc(root: Path | str, expect_full: bool | None = None) -> list[str]:
    """Problems with a VOC 2012 root (empty = OK); trainaug is checked only when aug data are present.

    ``expect_full``: see :func:`count_problem`.
    """
    root = Path(root)
    problems: list[str] = []
    try:
        base = resolve_voc_dir(root, "2012")
    except DatasetError as exc:
        return [str(exc)]
    for split in ("train", "val"):
        try:
            found = len(VOCSegDataset(root, split))
            problems += count_problem(f"VOC {split}", found, VOC_SPLIT_SIZES[split], expect_full)
        except DatasetError as exc:
            problems.append(str(exc))
    aug_txt = base / "ImageSets" / "Segmentation" / "aug.txt"
    has_aug = (base / "SegmentationClassAug").is_dir() or aug_txt.is_file()
    if has_aug or find_sbd(base, root) is not None:
        try:
            found = len(VOCSegDataset(root, "trainaug"))
            problems += count_problem("VOC trainaug", found, VOC_SPLIT_SIZES["trainaug"], expect_full)
        except DatasetError as exc:
            problems.append(str(exc))
    return problems


register_loader(
    VOCSegDataset,
    name="voc",
    description="PASCAL VOC 2012 semantic segmentation, 21 classes (val 1,449, trainaug 10,582).",
    default_dirname="VOCdevkit",
    homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
    licence="images: Flickr terms of use; annotations: PASCAL VOC terms (research use)",
    check=check_voc,
    how_to_get=(
        f"Download {VOC_URL} and unpack it into the data folder (it creates VOCdevkit/VOC2012); "
        f"for trainaug also unpack SBD {SBD_URL} and move benchmark_RELEASE/dataset to "
        "VOCdevkit/VOCaug/dataset."
    ),
)
