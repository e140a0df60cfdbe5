"""Disk space for the feature cache: estimate what a fill writes, check the file system has it."""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tips_bench.errors import TipsBenchError

#: Free space a fill leaves on the cache's file system beyond its own estimate.
DISK_RESERVE_BYTES = 256 << 20
_FILE_OVERHEAD = 4096  # .npy header, done.json and file-system block rounding, per file


class DiskSpaceError(TipsBenchError):
    """The cache's file system has too little free space for a fill."""


def human_bytes(n: float) -> str:
    """``1.5 GB``-style sizes (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_free_space(path: Path, needed_bytes: int, reserve_bytes: int = DISK_RESERVE_BYTES) -> None:
    """Raise ``DiskSpaceError`` (one sentence) unless ``needed_bytes + reserve_bytes`` are free at ``path``."""
    free = free_bytes(path)
    if needed_bytes + reserve_bytes > free:
        raise DiskSpaceError(
            f"not enough free disk space for the feature cache at {path}: this extraction needs about "
            f"{human_bytes(needed_bytes)} (plus {human_bytes(reserve_bytes)} kept free) but only {human_bytes(free)} "
            "is free; free some space (e.g. 'tips-bench cache rm --backbone NAME') or point --cache-dir or "
            "$TIPS_BENCH_CACHE at a larger disk")


def item_bytes(arrays: Mapping[str, tuple[Sequence[int], Any]]) -> int:
    """Bytes one item takes, from its arrays' per-item shapes and dtypes (``{"patches_11": ((768, 32, 32),
    np.float16)}``)."""
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in arrays.values())


def estimate_bytes(num_items: int, bytes_per_item: int, shard_size: int | None = None,
                   files_per_shard: int = 8) -> int:
    """Bytes a fill of ``num_items`` writes: payload plus per-file overhead of every shard."""
    shards = math.ceil(num_items / shard_size) if shard_size else 1
    return num_items * bytes_per_item + shards * (files_per_shard + 1) * _FILE_OVERHEAD
