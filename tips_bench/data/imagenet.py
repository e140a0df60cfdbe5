"""ImageNet-1k (ILSVRC2012) read from the official train/val layout.

Layout under ``root``::

    train/<wnid>/<wnid>_<n>.JPEG                     one folder per class (the official inner tars, unpacked)
    val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG          val sorted into class folders, or ...
    val/ILSVRC2012_val_XXXXXXXX.JPEG                 ... the flat official val, labelled by the devkit:
    ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt, meta.mat}   (or both files in root)

Labels. With ``label_space="present"`` (default) the label is the position of the image's wnid in the
sorted list of wnids present in the root (the union of the train and val class folders, or of the
val wnids named by the devkit), so train and val of the same root always agree. With all 1000 classes
present this is the standard sorted-wnid index (0 = n01440764, tench). ``label_space="imagenet1k"``
uses the index in the canonical 1000 sorted wnids whatever is present (``num_classes`` = 1000).

Class names and prompt templates come from open_clip (``open_clip.zero_shot_metadata``:
``IMAGENET_CLASSNAMES``, ``OPENAI_IMAGENET_TEMPLATES``), whose name list is in sorted-wnid order. The
canonical 1000 sorted wnids come from timm (``timm/data/_info/imagenet_synsets.txt``), so the names
of any subset of genuine ILSVRC2012 wnids are known; if that list cannot be read, names are known
only when exactly 1000 wnids are present. Otherwise ``info.class_names`` is empty.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from tips_bench.data.base import (
    DatasetInfo,
    Sample,
    read_rgb,
    read_split_file,
    register_loader,
    sentence,
)
from tips_bench.errors import DatasetError

NAME = "imagenet"
SPLITS = ("train", "val")
NUM_CLASSES = 1000
EXPECTED_IMAGES = {"train": 1_281_167, "val": 50_000}
LABEL_SPACES = ("present", "imagenet1k")

WNID_RE = re.compile(r"^n\d{8}$")
VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.jpe?g$", re.IGNORECASE)
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", ".")
GT_FILE = "ILSVRC2012_validation_ground_truth.txt"
META_FILE = "meta.mat"

HOW_TO_GET = (
    "register at https://image-net.org/download-images and unpack ILSVRC2012_img_train.tar into <root>/train/"
    " (then each inner <wnid>.tar into train/<wnid>/), ILSVRC2012_img_val.tar into <root>/val/ and"
    " ILSVRC2012_devkit_t12.tar.gz into <root>/ (or sort val into val/<wnid>/ folders)"
)


# --------------------------------------------------------------------------- open_clip / timm metadata


@lru_cache(maxsize=1)
def _zero_shot_metadata() -> ModuleType:
    """open_clip's ``zero_shot_metadata`` module, loaded without importing torch when possible."""
    if "open_clip" in sys.modules:
        from open_clip import zero_shot_metadata

        return zero_shot_metadata
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise DatasetError(
            "open_clip is not installed; install open_clip_torch to get the ImageNet class names"
        )
    path = Path(spec.origin).parent / "zero_shot_metadata.py"
    file_spec = importlib.util.spec_from_file_location("_tips_bench_open_clip_zero_shot_metadata", path)
    if file_spec is None or file_spec.loader is None:
        raise DatasetError(f"cannot load open_clip's class names from {path}; reinstall open_clip_torch")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def imagenet_classnames() -> tuple[str, ...]:
    """open_clip's 1000 ImageNet class names, in sorted-wnid order (0 = 'tench')."""
    return tuple(_zero_shot_metadata().IMAGENET_CLASSNAMES)


@lru_cache(maxsize=1)
def imagenet_templates() -> tuple[str, ...]:
    """open_clip's 80 OpenAI ImageNet prompt templates as format strings with a ``{c}`` placeholder."""
    templates = []
    for make in _zero_shot_metadata().OPENAI_IMAGENET_TEMPLATES:
        template = make("{c}")
        if template.format(c="x y") != make("x y"):
            raise DatasetError(f"open_clip template {template!r} is not a plain '{{c}}' substitution")
        templates.append(template)
    return tuple(templates)


@lru_cache(maxsize=1)
def _canonical_wnids() -> tuple[str, ...] | None:
    """The 1000 ILSVRC2012 wnids in sorted order, read from timm's package data (None if unavailable)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "_info" / "imagenet_synsets.txt"
    try:
        wnids = tuple(path.read_text().split())
    except OSError:
        return None
    if len(wnids) != NUM_CLASSES or list(wnids) != sorted(set(wnids)):
        return None
    return wnids


def imagenet_wnids() -> tuple[str, ...]:
    """The canonical 1000 ILSVRC2012 wnids in sorted order (label order of the full dataset)."""
    wnids = _canonical_wnids()
    if wnids is None:
        raise DatasetError("cannot read timm/data/_info/imagenet_synsets.txt; reinstall timm")
    return wnids


def _names_for(wnids: list[str]) -> tuple[tuple[str, ...], str]:
    """open_clip names of ``wnids`` and where the wnid-to-name mapping came from ('' names = unknown)."""
    canonical = _canonical_wnids()
    names = imagenet_classnames()
    if canonical is not None:
        position = {w: i for i, w in enumerate(canonical)}
        if all(w in position for w in wnids):
            return tuple(names[position[w]] for w in wnids), "open_clip names via timm's sorted wnid list"
        return (), "unknown: some folders are not ILSVRC2012 wnids"
    if len(wnids) == NUM_CLASSES:
        return names, "open_clip names by position (1000 sorted wnids present)"
    return (), "unknown: canonical wnid list unavailable and fewer than 1000 classes present"


# --------------------------------------------------------------------------- directory scanning


def _image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [e.name for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]


def _subdirs(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted wnid-named sub-folders and the other (non-hidden) sub-folders."""
    with os.scandir(folder) as entries:
        dirs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    return [d for d in dirs if WNID_RE.match(d)], [d for d in dirs if not WNID_RE.match(d)]


def _find_devkit_file(root: Path, name: str) -> Path:
    for sub in DEVKIT_DIRS:
        path = root / name if sub == "." else root / sub / name
        if path.is_file():
            return path
    expected = root / DEVKIT_DIRS[0] / name
    raise DatasetError(
        f"the flat ILSVRC2012 val folder needs the devkit file {name}, not found at {expected}"
        f" (or {root / name}); unpack ILSVRC2012_devkit_t12.tar.gz (image-net.org) into the root"
        " or sort val into val/<wnid>/ folders"
    )


def _read_meta(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid for the 1000 leaf synsets of the devkit's ``meta.mat``."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
        mapping = {}
        for synset in np.atleast_1d(synsets):
            if int(synset["num_children"]) == 0:
                mapping[int(synset["ILSVRC2012_ID"])] = str(synset["WNID"])
    except (MatReadError, KeyError, ValueError, TypeError, IndexError, OSError, NotImplementedError) as exc:
        raise DatasetError(
            f"cannot read the synsets table of {path} ({exc}); re-extract ILSVRC2012_devkit_t12.tar.gz"
        ) from exc
    return mapping


def _flat_val_entries(root: Path, val_dir: Path) -> list[tuple[str, str]]:
    """(file name, wnid) of every image of the flat official val folder, labelled by the devkit."""
    gt_path = _find_devkit_file(root, GT_FILE)
    meta = _read_meta(_find_devkit_file(root, META_FILE))
    lines = read_split_file(gt_path, "ILSVRC2012 validation ground truth", "re-extract the devkit")
    try:
        ids = [int(line) for line in lines]
    except ValueError as exc:
        raise DatasetError(f"{gt_path} must hold one integer ILSVRC2012_ID per line ({exc})") from exc
    entries = []
    for name in _image_files(val_dir):
        match = VAL_NAME_RE.match(name)
        if match is None:
            raise DatasetError(
                f"cannot label {val_dir / name}: flat val images must be named ILSVRC2012_val_XXXXXXXX.JPEG;"
                " remove the file or sort val into val/<wnid>/ folders"
            )
        number = int(match.group(1))
        if not 1 <= number <= len(ids):
            raise DatasetError(
                f"{val_dir / name} has no line in {gt_path} ({len(ids)} lines); re-extract the devkit"
            )
        ilsvrc_id = ids[number - 1]
        if ilsvrc_id not in meta:
            raise DatasetError(
                f"ILSVRC2012_ID {ilsvrc_id} (line {number} of {gt_path}) is not a leaf synset of meta.mat;"
                " re-extract the devkit"
            )
        entries.append((name, meta[ilsvrc_id]))
    return entries


def _scan_split(root: Path, split: str) -> tuple[list[tuple[str, str]], set[str], str]:
    """Sorted (path relative to the split folder, wnid) of a split, the wnids present, and the layout."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"ImageNet {split} folder not found at {split_dir}; {HOW_TO_GET}")
    wnid_dirs, _ = _subdirs(split_dir)
    if wnid_dirs:
        entries = [(f"{w}/{name}", w) for w in wnid_dirs for name in _image_files(split_dir / w)]
        layout, present = "folders", set(wnid_dirs)
    elif split == "val" and _image_files(split_dir):
        entries = _flat_val_entries(root, split_dir)
        layout, present = "flat+devkit", {w for _, w in entries}
    else:
        raise DatasetError(f"no <wnid> class folders (e.g. n01440764/) found in {split_dir}; {HOW_TO_GET}")
    entries.sort(key=lambda e: (e[0].rsplit("/", 1)[-1], e[0]))
    return entries, present, layout


def _split_wnids(root: Path, split: str) -> set[str]:
    """wnids present in a split (cheap for the folder layout); empty when the split is absent."""
    split_dir = root / split
    if not split_dir.is_dir():
        return set()
    wnid_dirs, _ = _subdirs(split_dir)
    if wnid_dirs:
        return set(wnid_dirs)
    try:
        return _scan_split(root, split)[1]
    except DatasetError:
        return set()


# --------------------------------------------------------------------------- dataset


class ImageNet:
    """ILSVRC2012 train or val; yields ``id`` (file stem), ``image`` and ``label``."""

    def __init__(
        self,
        root: Path | str,
        split: str = "val",
        *,
        subset_per_class: int | None = None,
        label_space: str = "present",
    ):
        if split not in SPLITS:
            raise DatasetError(f"unknown ImageNet split {split!r}; choose one of {', '.join(SPLITS)}")
        if label_space not in LABEL_SPACES:
            raise DatasetError(
                f"unknown label_space {label_space!r}; choose one of {', '.join(LABEL_SPACES)}"
            )
        if subset_per_class is not None and subset_per_class < 1:
            raise DatasetError(f"subset_per_class must be a positive integer, got {subset_per_class}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"ImageNet root not found at {self.root}; {HOW_TO_GET}")
        self.name = NAME
        self.split = split
        self._split_dir = self.root / split
        entries, present, layout = _scan_split(self.root, split)
        other = "train" if split == "val" else "val"
        present_all = sorted(present | _split_wnids(self.root, other))

        if label_space == "imagenet1k":
            classes = list(imagenet_wnids())
            unknown = sorted(set(present_all) - set(classes))
            if unknown:
                raise DatasetError(
                    f"folders {', '.join(unknown[:3])} in {self.root} are not ILSVRC2012 wnids;"
                    " use label_space='present' or remove them"
                )
            class_names, names_source = imagenet_classnames(), "open_clip names (canonical 1000 wnids)"
        else:
            classes = present_all
            class_names, names_source = _names_for(classes)

        if subset_per_class is not None:
            taken: Counter[str] = Counter()
            kept = []
            for rel, wnid in entries:
                if taken[wnid] < subset_per_class:
                    taken[wnid] += 1
                    kept.append((rel, wnid))
            entries = kept

        index = {w: i for i, w in enumerate(classes)}
        self._files = [rel for rel, _ in entries]
        self._labels = np.array([index[w] for _, w in entries], dtype=np.int64)
        notes = f"{layout} layout; label = index of the wnid in {len(classes)} sorted wnids" + (
            " (present in root)" if label_space == "present" else " (canonical ImageNet-1k)"
        )
        if subset_per_class is not None:
            notes += f"; first {subset_per_class} images per class"
        self.info = DatasetInfo(
            name=NAME,
            split=split,
            num_classes=len(classes),
            class_names=class_names,
            notes=notes,
            extra={
                "wnids": tuple(classes),
                "layout": layout,
                "label_space": label_space,
                "class_names_source": names_source,
                "subset_per_class": subset_per_class,
            },
        )

    @property
    def labels(self) -> np.ndarray:
        """Label of every item (int64), without decoding images."""
        return self._labels.copy()

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Sample:
        rel = self._files[index]
        return {
            "id": Path(rel).stem,
            "image": read_rgb(self._split_dir / rel),
            "label": int(self._labels[index]),
        }


# --------------------------------------------------------------------------- check and registration


def check_imagenet(root: Path | str, expect_full: bool = True) -> list[str]:
    """Problems with an ImageNet root (empty = OK); ``expect_full`` also compares counts with the release."""
    root = Path(root)
    if not root.is_dir():
        return [f"ImageNet root not found at {root}; {HOW_TO_GET}"]
    problems: list[str] = []
    found: dict[str, set[str]] = {}
    canonical = _canonical_wnids()
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(f"ImageNet {split} folder not found at {split_dir}; {HOW_TO_GET}")
            continue
        try:
            entries, present, layout = _scan_split(root, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        found[split] = present
        if layout == "folders":
            _, others = _subdirs(split_dir)
            if others:
                problems.append(
                    f"{split_dir} has folders that are not wnids (ignored): {', '.join(others[:5])}"
                )
        if canonical is not None:
            unknown = sorted(present - set(canonical))
            if unknown:
                problems.append(
                    f"{split_dir} has wnids outside ImageNet-1k (names unknown): {', '.join(unknown[:5])}"
                )
        if expect_full:
            if len(present) != NUM_CLASSES:
                problems.append(
                    f"found {len(present)} classes in {split_dir}, expected {NUM_CLASSES}; labels index the"
                    f" {len(present)} sorted wnids present"
                )
            if len(entries) != EXPECTED_IMAGES[split]:
                problems.append(
                    f"found {len(entries):,} {split} images in {split_dir},"
                    f" expected {EXPECTED_IMAGES[split]:,}"
                )
    if len(found) == 2 and found["train"] != found["val"]:
        only_val = sorted(found["val"] - found["train"])
        only_train = sorted(found["train"] - found["val"])
        problems.append(
            f"train and val classes differ ({len(only_train)} only in train, {len(only_val)} only in val,"
            f" e.g. {', '.join((only_val or only_train)[:3])})"
        )
    return problems


register_loader(
    ImageNet,
    name=NAME,
    splits=SPLITS,
    description="ImageNet-1k (ILSVRC2012): kNN, linear probe and zero-shot classification (top-1 on val)",
    default_dirname="imagenet",
    homepage="https://image-net.org/challenges/LSVRC/2012/",
    licence="ImageNet terms of access: non-commercial research and education only"
    " (registration required)",
    check=check_imagenet,
    how_to_get=sentence(HOW_TO_GET),
)
