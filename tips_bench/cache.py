"""A content-addressed, sharded, crash-safe store of extracted features.

An entry's key is the sha256 of everything that determines its content (backbone weights
hash, layers, resolution, preprocessing, dataset split fingerprint, code version). Its folder
holds ``meta.json`` (the key fields, shard size, item count) and one folder per shard
(``shard_00000/``) with one ``.npy`` file per array (features as float16, targets as stored).
A shard is written to ``shard_XXXXX.tmp``, fsynced, its CRC32s recorded in ``done.json``,
then renamed into place, so a crash leaves either a complete shard or a temp folder that the
next fill deletes. Each complete shard is verified (sizes and CRC32 of every file) the first
time a process opens the entry; a corrupt shard is deleted and rebuilt by the next fill.
Readers memory-map one shard at a time, so probes stream caches larger than memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tips_bench.errors import TipsBenchError

#: Bump when the extraction code changes what is stored for the same key fields.
CACHE_FORMAT_VERSION = 1
DEFAULT_SHARD_BYTES = 64 << 20


def default_cache_dir() -> Path:
    """``$TIPS_BENCH_CACHE`` or ``~/.cache/tips-bench/features``."""
    return Path(os.environ.get("TIPS_BENCH_CACHE", "~/.cache/tips-bench/features")).expanduser()


def cache_key(fields: dict[str, Any]) -> str:
    """sha256 (first 24 hex) of the canonical JSON of the key fields."""
    blob = json.dumps({"cache_format": CACHE_FORMAT_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


class _CrcWriter:
    """A file wrapper that computes the CRC32 of everything written (no second read of the file)."""

    def __init__(self, fh):
        self.fh, self.crc = fh, 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int
    path: Path


class CacheEntry:
    """One extracted (backbone, dataset split, protocol) feature set."""

    def __init__(self, root: Path, fields: dict[str, Any]):
        self.fields = fields
        self.key = cache_key(fields)
        self.path = root / self.key
        self._verified: set[int] = set()

    # -- layout -----------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @property
    def num_items(self) -> int:
        meta = self.meta()
        return int(meta["num_items"]) if meta else 0

    def shards(self) -> list[Shard]:
        meta = self.meta()
        if meta is None:
            return []
        n, size = int(meta["num_items"]), int(meta["shard_size"])
        return [Shard(i, s, min(s + size, n), self.path / f"shard_{i:05d}") for i, s in enumerate(range(0, n, size))]

    # -- integrity --------------------------------------------------------------------------
    def _shard_ok(self, shard: Shard) -> bool:
        if shard.index in self._verified:
            return True
        done = shard.path / "done.json"
        try:
            record = json.loads(done.read_text())
            for name, info in record["arrays"].items():
                file = shard.path / f"{name}.npy"
                if file.stat().st_size != info["bytes"] or _crc(file) != info["crc32"]:
                    return False
        except (FileNotFoundError, json.JSONDecodeError, KeyError, OSError):
            return False
        self._verified.add(shard.index)
        return True

    def missing_shards(self) -> list[Shard]:
        """Shards that are absent, partial or corrupt (corrupt ones are deleted)."""
        missing = []
        for shard in self.shards():
            if not self._shard_ok(shard):
                shutil.rmtree(shard.path, ignore_errors=True)
                missing.append(shard)
        return missing

    def complete(self) -> bool:
        return self.meta() is not None and not self.missing_shards()

    # -- writing ----------------------------------------------------------------------------
    def prepare(self, num_items: int, shard_size: int) -> None:
        """Create the folder and meta.json (kept as is if an earlier run wrote the same)."""
        if num_items <= 0:
            raise TipsBenchError("nothing to extract: the dataset split is empty")
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        if meta is not None and meta["num_items"] == num_items:
            return
        for stale in self.path.glob("shard_*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fields": self.fields, "num_items": num_items, "shard_size": shard_size,
                                   "key": self.key}, indent=1, default=str))
        os.replace(tmp, self.meta_path)

    def annotate(self, **values: Any) -> None:
        """Add facts to meta.json (e.g. the extraction rate), atomically."""
        meta = self.meta() or {}
        meta.update(values)
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, self.meta_path)

    def write_shard(self, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        """Write one shard's arrays atomically (temp folder, fsync, CRCs, rename)."""
        tmp = shard.path.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        record: dict[str, Any] = {"start": shard.start, "stop": shard.stop, "arrays": {}}
        for name, value in arrays.items():
            if len(value) != shard.stop - shard.start:
                raise ValueError(f"array {name} has {len(value)} rows, shard expects {shard.stop - shard.start}")
            file = tmp / f"{name}.npy"
            with open(file, "wb") as fh:
                writer = _CrcWriter(fh)
                np.lib.format.write_array(writer, np.ascontiguousarray(value), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            record["arrays"][name] = {"bytes": file.stat().st_size, "crc32": writer.crc,
                                      "dtype": str(value.dtype), "shape": list(value.shape)}
        (tmp / "done.json").write_text(json.dumps(record))
        _fsync_dir(tmp)
        shutil.rmtree(shard.path, ignore_errors=True)
        os.replace(tmp, shard.path)
        self._verified.add(shard.index)

    def fill(self, produce: Callable[[int, int], Iterator[dict[str, np.ndarray]]],
             on_shard: Callable[[Shard], None] | None = None) -> int:
        """Write every missing shard; ``produce(start, stop)`` yields batches of arrays for those items.

        Returns the number of items extracted (0 when the entry was already complete).
        """
        for tmp in self.path.glob("shard_*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
        done = 0
        for shard in self.missing_shards():
            parts: dict[str, list[np.ndarray]] = {}
            for batch in produce(shard.start, shard.stop):
                for name, value in batch.items():
                    parts.setdefault(name, []).append(value)
            self.write_shard(shard, {k: np.concatenate(v) for k, v in parts.items()})
            done += shard.stop - shard.start
            if on_shard is not None:
                on_shard(shard)
        return done

    # -- reading ----------------------------------------------------------------------------
    def array_names(self) -> list[str]:
        shards = self.shards()
        if not shards:
            return []
        record = json.loads((shards[0].path / "done.json").read_text())
        return sorted(record["arrays"])

    def item_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one item of an array (e.g. (D, h, w) for a patch map)."""
        record = json.loads((self.shards()[0].path / "done.json").read_text())
        return tuple(record["arrays"][name]["shape"][1:])

    def _open(self, shard: Shard, name: str) -> np.ndarray:
        if not self._shard_ok(shard):
            raise TipsBenchError(f"feature cache shard {shard.path} is missing or corrupt; run again to rebuild it")
        return np.load(shard.path / f"{name}.npy", mmap_mode="r")

    def read(self, name: str, dtype: Any = None) -> np.ndarray:
        """The whole array in memory (for small arrays: globals, labels)."""
        parts = [np.asarray(self._open(s, name), dtype=dtype) for s in self.shards()]
        return np.concatenate(parts)

    def read_rows(self, name: str, rows: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """The given rows (ascending global item indices, any shards) of one array, copied out in that order.

        Each shard holding some of the rows is memory-mapped once and released after the copy, so memory
        stays bounded by the result plus the touched pages of one shard (for shuffled streaming in blocks).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.num_items or np.any(np.diff(rows) < 0)):
            raise ValueError(f"rows must be ascending indices in [0, {self.num_items})")
        out: np.ndarray | None = None
        for shard in self.shards():
            lo, hi = np.searchsorted(rows, [shard.start, shard.stop])
            if lo < hi:
                part = _cast(self._open(shard, name)[rows[lo:hi] - shard.start], dtype)
                if out is None:
                    out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
                out[lo:hi] = part
        if out is None:
            return np.zeros((0, *self.item_shape(name)), dtype=dtype)
        return out

    def iter_batches(self, names: Iterable[str], batch_size: int, seed: int | None = None,
                     dtype: Any = np.float32) -> Iterator[dict[str, np.ndarray]]:
        """Stream batches shard by shard (shuffled shard order and rows when ``seed`` is set).

        Only one shard is memory-mapped at a time and each batch is copied out (features cast
        to ``dtype``), so memory stays bounded by one batch plus one shard's touched pages.
        """
        names = list(names)
        rng = np.random.default_rng(seed) if seed is not None else None
        shards = self.shards()
        order = rng.permutation(len(shards)) if rng is not None else range(len(shards))
        for si in order:
            shard = shards[si]
            maps = {n: self._open(shard, n) for n in names}
            rows = np.arange(shard.stop - shard.start)
            if rng is not None:
                rng.shuffle(rows)
            for b in range(0, len(rows), batch_size):
                idx = np.sort(rows[b : b + batch_size])
                yield {n: _cast(m[idx], dtype) for n, m in maps.items()}
            del maps


def _cast(value: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is not None and np.issubdtype(value.dtype, np.floating):
        return value.astype(dtype)
    return np.array(value)


class FeatureCache:
    """The folder holding every cache entry."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def entry(self, fields: dict[str, Any]) -> CacheEntry:
        return CacheEntry(self.root, fields)


def shard_size_for(bytes_per_item: int, target_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Items per shard so that one shard is about ``target_bytes``."""
    return max(1, target_bytes // max(1, bytes_per_item))
