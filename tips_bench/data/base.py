"""The record every dataset yields, and small helpers shared by the loaders.

A dataset is a sequence of samples. A sample is a plain ``dict`` whose keys come from the
table below; a dataset only fills the keys its tasks need. Arrays are numpy, never torch, so
that loading runs in worker processes without touching the backbone.

======================  =====================================  ==========================================
key                     type                                   meaning
======================  =====================================  ==========================================
``id``                  str                                    stable identifier (file stem, image id)
``image``               uint8 (H, W, 3)                        RGB pixels
``seg``                 int64 (H, W)                           class index per pixel, ``IGNORE_INDEX`` = void
``depth``               float32 (H, W)                         metric depth in metres, 0 where unknown
``depth_valid``         bool (H, W)                            pixels scored for depth (range + crop)
``normals``             float32 (H, W, 3)                      unit surface normals, camera frame (x right,
                                                               y down, z forward), pointing to the camera
``normals_valid``       bool (H, W)                            pixels scored for normals
``label``               int                                    image-level class index
``captions``            list[str]                              one or more captions of the image
``intrinsics``          float32 (3, 3)                         pinhole camera matrix K (pixels)
``pose``                float32 (4, 4)                         camera-to-world transform
``domain``              str                                    sub-domain (UnED), or '' when not used
======================  =====================================  ==========================================

Correspondence datasets yield pairs instead: ``image_a``, ``image_b`` (uint8), ``points_a`` and
``points_b`` float32 (K, 2) in (x, y) pixel coordinates of each image, ``points_valid`` bool (K,),
and ``bbox_b`` float32 (4,) = (x0, y0, x1, y1) of the object in image b (for PCK thresholds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tips_bench.errors import DatasetError

IGNORE_INDEX = 255

Sample = dict[str, Any]


class Dataset(Protocol):
    """What a task needs from a dataset."""

    name: str
    split: str
    info: DatasetInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset split, recorded with every result."""

    name: str
    split: str
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    depth_range: tuple[float, float] = (0.0, 0.0)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def require_path(path: Path, what: str, how_to_fix: str) -> Path:
    """Return ``path`` if it exists, else raise one sentence naming it and how to obtain it."""
    if not path.exists():
        raise DatasetError(f"{what} not found at {path}; {how_to_fix}")
    return path


def read_split_file(path: Path, what: str, how_to_fix: str) -> list[str]:
    """Read a text file of one identifier per line (blank lines skipped)."""
    require_path(path, what, how_to_fix)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3); one clear error if it is unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path} ({exc}); re-download or remove the file") from exc


class ListDataset:
    """A dataset backed by a list of already-built samples (fixtures, tiny synthetic sets)."""

    def __init__(self, info: DatasetInfo, samples: Sequence[Sample]):
        self.info = info
        self.name = info.name
        self.split = info.split
        self._samples = list(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        return self._samples[index]


@dataclass(frozen=True)
class DatasetEntry:
    """How to find, open and check one dataset; listed by ``tips-bench data list``.

    ``open(root, split)`` returns a :class:`Dataset`; ``check(root)`` returns human-readable
    problems (empty list = layout OK) and never raises for a merely incomplete layout.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    default_dirname: str
    homepage: str
    licence: str
    open: Any
    check: Any
    how_to_get: str = ""


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Add a dataset to the catalogue (called at import time by each loader module)."""
    _DATASETS[entry.name] = entry
    return entry


def register_loader(cls: type, name: str, splits: tuple[str, ...] | None = None, **fields: Any) -> DatasetEntry:
    """Register the dataset class ``cls`` under ``name``: it opens ``cls(root, split, **options)`` and lists
    ``splits`` (default ``cls.splits``); ``fields`` are the other :class:`DatasetEntry` fields."""
    splits = tuple(cls.splits if splits is None else splits)
    return register_dataset(DatasetEntry(name=name, splits=splits, open=cls, **fields))


def sentence(text: str) -> str:
    """``text`` as a sentence: capitalised, with a final full stop (for ``how_to_get`` from error hints)."""
    return text[0].upper() + text[1:] + "."


def registered_datasets() -> dict[str, DatasetEntry]:
    """Every dataset registered so far, by name."""
    return dict(_DATASETS)
