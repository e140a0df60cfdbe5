"""Resolve a task's dataset name to a dataset object: the synthetic world or a registered loader.

Real datasets are found under ``--data-root`` / ``$TIPS_BENCH_DATA`` (default
``~/tips-bench-data``) in the folder their official archive unpacks to, or at an explicit
``--root``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from tips_bench.data.base import Dataset, DatasetEntry, registered_datasets
from tips_bench.errors import DatasetError

#: Modules that register real datasets at import time.
LOADER_MODULES = ("voc", "ade20k", "pascal_context", "nyu", "navi", "spair", "imagenet", "uned", "captions")
#: The synthetic datasets: registered name -> class in :mod:`tips_bench.data.synthetic` (imported on use).
SYNTHETIC = {"synthetic_scenes": "SceneDataset", "synthetic_objects": "ObjectDataset", "synthetic_pairs": "PairDataset"}


def data_root() -> Path:
    return Path(os.environ.get("TIPS_BENCH_DATA", "~/tips-bench-data")).expanduser()


def dataset_entries() -> dict[str, DatasetEntry]:
    """Every registered real dataset (imports the loader modules on first use)."""
    for module in LOADER_MODULES:
        try:
            importlib.import_module(f"tips_bench.data.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tips_bench.data.{module}":
                raise
    return registered_datasets()


def dataset_root(name: str, root: str | Path | None = None) -> Path:
    """Where a dataset is expected: an explicit root, else data_root()/<official folder name>."""
    if root:
        return Path(root).expanduser()
    entries = dataset_entries()
    if name not in entries:
        raise DatasetError(f"unknown dataset '{name}'; run 'tips-bench data list' to see them")
    return data_root() / entries[name].default_dirname


def open_dataset(name: str, split: str, size: int | None = None, root: str | Path | None = None,
                 image_size: tuple[int, int] = (224, 224), seed: int = 0, options: dict[str, Any] | None = None
                 ) -> Dataset:
    """A dataset split by registered name (synthetic ones are generated, never read from disk)."""
    options = dict(options or {})
    if name in SYNTHETIC:
        from tips_bench.data import synthetic

        cls = getattr(synthetic, SYNTHETIC[name])
        return cls(split, int(size or 32), image_size=tuple(image_size), seed=seed, **options)
    entries = dataset_entries()
    if name not in entries:
        raise DatasetError(f"unknown dataset '{name}'; run 'tips-bench data list' to see them")
    entry = entries[name]
    path = dataset_root(name, root)
    if not path.exists():
        raise DatasetError(f"{name} not found at {path}; {entry.how_to_get.rstrip('.')}, then pass --data-root "
                           "or --root")
    return entry.open(path, split, **options)
