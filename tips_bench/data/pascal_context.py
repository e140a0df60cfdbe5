"""PASCAL-Context (PC59 / PC60) semantic segmentation, in the layout mmsegmentation documents.

The official release (cs.stanford.edu/~roozbeh/pascal-context) ships 459-class ``.mat`` files; the
community benchmark uses 59 frequent classes + background, with train/val taken from the PASCAL in
Detail ``trainval_merged.json``. mmsegmentation's ``tools/dataset_converters/pascal_context.py``
(with the ``detail`` API) writes that benchmark as::

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg                      (VOCtrainval_03-May-2010.tar)
    VOCdevkit/VOC2010/SegmentationClassContext/<id>.png        8-bit L PNG, 0 = background, 1..59
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt   4,998 / 5,105 ids

``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2010``.
PC60 keeps labels as they are (60 classes, 0 = background). PC59 drops background with
mmseg's ``reduce_zero_label``: 0 → 255 (ignored), x → x − 1 (59 classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tips_bench.data.base import (
    DatasetInfo,
    Sample,
    read_rgb,
    read_split_file,
    register_loader,
    require_path,
)
from tips_bench.data.voc import (
    count_problem,
    list_stems,
    read_index_png,
    reduce_zero_label,
    require_members,
    resolve_voc_dir,
)
from tips_bench.errors import DatasetError

PASCAL_CONTEXT_60_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant",
    "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track",
    "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
"""PC60 names in label order (mmseg ``PascalContextDataset``): background, then the 59 classes in the
order of their 459-class ids (alphabetical), which is the order the converter's ``np.sort`` produces."""

PASCAL_CONTEXT_59_CLASSES: tuple[str, ...] = PASCAL_CONTEXT_60_CLASSES[1:]
"""PC59 names in label order (mmseg ``PascalContextDataset59``)."""

_READABLE = {"pottedplant": "potted plant", "tvmonitor": "tv monitor"}
PASCAL_CONTEXT_60_PROMPT_NAMES: tuple[str, ...] = tuple(
    _READABLE.get(c, c) for c in PASCAL_CONTEXT_60_CLASSES
)
"""Readable names for text prompts, same order as :data:`PASCAL_CONTEXT_60_CLASSES`."""
PASCAL_CONTEXT_59_PROMPT_NAMES: tuple[str, ...] = PASCAL_CONTEXT_60_PROMPT_NAMES[1:]

PASCAL_CONTEXT_459_IDS: tuple[int, ...] = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
    144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
    354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
"""The 459-class id of each PC60 label (0 = background), as mapped by mmseg's converter (sorted)."""

PASCAL_CONTEXT_SPLIT_SIZES: dict[str, int] = {"train": 4998, "val": 5105}

VOC2010_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
MERGED_JSON_URL = "https://codalabuser.blob.core.windows.net/public/trainval_merged.json"
_HOW_TO_GET = (
    f"download {VOC2010_URL} and {MERGED_JSON_URL}, then run mmsegmentation's "
    "tools/dataset_converters/pascal_context.py (needs github.com/zhanghang1989/detail-api) to write "
    "VOCdevkit/VOC2010/SegmentationClassContext and ImageSets/SegmentationContext"
)


class PascalContextDataset:
    """PASCAL-Context with ``num_classes`` 59 (background ignored) or 60; ``split`` in train, val."""

    splits = ("train", "val")

    def __init__(self, root: Path | str, split: str, *, num_classes: int = 59):
        if num_classes not in (59, 60):
            raise DatasetError(f"PASCAL-Context num_classes must be 59 or 60, not {num_classes}")
        if split not in self.splits:
            raise DatasetError(f"unknown PASCAL-Context split {split!r}; choose train or val")
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.name = f"pascal_context{num_classes}"
        self.base = resolve_voc_dir(self.root, "2010")
        image_dir = require_path(self.base / "JPEGImages", "VOC2010 JPEGImages folder", _HOW_TO_GET)
        label_dir = require_path(
            self.base / "SegmentationClassContext", "PASCAL-Context label folder", _HOW_TO_GET
        )
        split_file = self.base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        ids = read_split_file(split_file, f"PASCAL-Context {split} split file", _HOW_TO_GET)
        require_members(ids, list_stems(label_dir, ".png"), label_dir, ".png", _HOW_TO_GET)
        require_members(ids, list_stems(image_dir, ".jpg"), image_dir, ".jpg", _HOW_TO_GET)

        self._image_dir = image_dir
        self._label_dir = label_dir
        self._ids = ids
        if num_classes == 59:
            names, prompts = PASCAL_CONTEXT_59_CLASSES, PASCAL_CONTEXT_59_PROMPT_NAMES
            notes = "PASCAL-Context 59: background 0 -> 255 ignored, x -> x-1 (mmseg PascalContextDataset59)."
        else:
            names, prompts = PASCAL_CONTEXT_60_CLASSES, PASCAL_CONTEXT_60_PROMPT_NAMES
            notes = "PASCAL-Context 60: labels as stored, 0 = background is a class (PascalContextDataset)."
        self.info = DatasetInfo(
            name=self.name,
            split=split,
            num_classes=num_classes,
            class_names=names,
            notes=notes,
            extra={"prompt_names": prompts},
        )

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self._ids[index]
        image = read_rgb(self._image_dir / f"{image_id}.jpg")
        label_path = self._label_dir / f"{image_id}.png"
        label = read_index_png(label_path)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"label {label_path} is {label.shape} but its image is {image.shape[:2]}")
        seg = reduce_zero_label(label) if self.num_classes == 59 else label.astype(np.int64)
        return {"id": image_id, "image": image, "seg": seg}


class PascalContext59Dataset(PascalContextDataset):
    """PC59: 59 classes, background ignored."""

    def __init__(self, root: Path | str, split: str):
        super().__init__(root, split, num_classes=59)


class PascalContext60Dataset(PascalContextDataset):
    """PC60: 60 classes including background (label 0)."""

    def __init__(self, root: Path | str, split: str):
        super().__init__(root, split, num_classes=60)


def check_pascal_context(root: Path | str, expect_full: bool | None = None) -> list[str]:
    """Problems with a PASCAL-Context root (empty = OK); the same layout serves PC59 and PC60.

    ``expect_full``: see :func:`tips_bench.data.voc.count_problem`.
    """
    problems: list[str] = []
    for split, expected in PASCAL_CONTEXT_SPLIT_SIZES.items():
        try:
            found = len(PascalContextDataset(root, split))
            problems += count_problem(f"PASCAL-Context {split}", found, expected, expect_full)
        except DatasetError as exc:
            problems.append(str(exc))
    return list(dict.fromkeys(problems))


for _n, _cls in ((59, PascalContext59Dataset), (60, PascalContext60Dataset)):
    register_loader(
        _cls,
        name=f"pascal_context{_n}",
        description=f"PASCAL-Context, {_n} classes (mmseg layout of VOC2010): val 5,105, train 4,998.",
        default_dirname="VOCdevkit",
        homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
        licence="images: Flickr terms of use (PASCAL VOC 2010); annotations: research use",
        check=check_pascal_context,
        how_to_get=(
            f"Unpack {VOC2010_URL} into the data folder (creates VOCdevkit/VOC2010), put "
            f"{MERGED_JSON_URL} in VOCdevkit/VOC2010 and run mmsegmentation's "
            "tools/dataset_converters/pascal_context.py data/VOCdevkit "
            "data/VOCdevkit/VOC2010/trainval_merged.json (needs the detail-api package)."
        ),
    )
