"""One shard's arrays on disk: fixed ``(n, ...)`` arrays and ragged lists, each file with its CRC32.

A *fixed* array is one ``NAME.npy`` of shape ``(n, ...)``. A *ragged* array (items of one dtype
and any shapes, even different ndim) is stored without padding: ``NAME.npy`` holds the items'
flattened data concatenated (1-D), ``NAME.shapes.npy`` an int64 table ``(n, k)`` of their shapes,
padded with -1 past each item's ndim (``k`` = the largest ndim in the shard). Offsets are derived
from the shapes. Every file is written through a CRC32 counter, so no file is read twice.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SHAPES_SUFFIX = ".shapes"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

#: An array of a shard as produced: an ndarray (n, ...) or a list of n ndarrays (ragged).
ArrayValue = np.ndarray | list


def check_name(name: str) -> None:
    """Array names become file names: letters, digits, ``_ . -``; ``.shapes`` is reserved."""
    if not _NAME.match(name) or name.endswith(SHAPES_SUFFIX):
        raise ValueError(f"cache array name {name!r} must be letters, digits, '_', '.', '-' and not end in "
                         f"'{SHAPES_SUFFIX}'")


def ragged_items(name: str, value: list) -> list[np.ndarray]:
    """Validate a ragged list: ndarrays of one (non-object) dtype."""
    items = [np.asarray(v) for v in value]
    dtypes = {v.dtype for v in items}
    if len(dtypes) > 1:
        raise ValueError(f"ragged array {name} mixes dtypes {sorted(map(str, dtypes))}; cast its items to one dtype")
    if dtypes and next(iter(dtypes)).hasobject:
        raise ValueError(f"ragged array {name} holds Python objects; only numeric/bool items can be cached")
    return items


def crc32_file(path: Path) -> int:
    """CRC32 of a file, read in 4 MiB blocks."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


class _CrcWriter:
    """A file wrapper that computes the CRC32 of everything written (no second read of the file)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.crc = fh, 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)


def _write_file(path: Path, write) -> dict[str, int]:
    """Create ``path``, let ``write(writer)`` fill it, fsync; return its size and CRC32."""
    with open(path, "xb") as fh:
        writer = _CrcWriter(fh)
        write(writer)
        fh.flush()
        os.fsync(fh.fileno())
    return {"bytes": path.stat().st_size, "crc32": writer.crc}


def write_fixed(folder: Path, name: str, value: np.ndarray) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Write a fixed array; returns (array record, {file name: size and CRC})."""
    value = np.ascontiguousarray(value)
    if value.dtype.hasobject:
        raise ValueError(f"array {name} holds Python objects; only numeric/bool arrays can be cached")
    files = {f"{name}.npy": _write_file(folder / f"{name}.npy",
                                        lambda w: np.lib.format.write_array(w, value, allow_pickle=False))}
    return {"ragged": False, "dtype": str(value.dtype), "shape": list(value.shape)}, files


def write_ragged(folder: Path, name: str, items: Sequence[np.ndarray]) -> tuple[dict[str, Any],
                                                                                dict[str, dict[str, int]]]:
    """Write a ragged array (data streamed item by item, no padded or concatenated copy)."""
    dtype = items[0].dtype if items else np.dtype(np.float32)
    k = max((v.ndim for v in items), default=0)
    shapes = np.full((len(items), k), -1, dtype=np.int64)
    for i, v in enumerate(items):
        shapes[i, : v.ndim] = v.shape
    total = int(sum(v.size for v in items))

    def data(writer: _CrcWriter) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(writer, header)
        for v in items:
            if v.size:
                writer.write(np.ascontiguousarray(v).reshape(-1).view(np.uint8))

    files = {f"{name}.npy": _write_file(folder / f"{name}.npy", data),
             f"{name}{SHAPES_SUFFIX}.npy": _write_file(folder / f"{name}{SHAPES_SUFFIX}.npy",
                                                       lambda w: np.lib.format.write_array(w, shapes))}
    return {"ragged": True, "dtype": str(dtype), "elements": total, "max_ndim": k}, files


def write_array(folder: Path, name: str, value: ArrayValue) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Write a fixed ndarray or a ragged list into ``folder``."""
    check_name(name)
    if isinstance(value, list):
        return write_ragged(folder, name, ragged_items(name, value))
    return write_fixed(folder, name, value)


def open_fixed(folder: Path, name: str) -> np.ndarray:
    """A fixed array, memory-mapped."""
    return np.load(folder / f"{name}.npy", mmap_mode="r")


def shapes_of(table: np.ndarray) -> list[tuple[int, ...]]:
    """Rows of a shapes table (padded with -1) as shape tuples."""
    return [tuple(int(d) for d in row if d >= 0) for row in table]


class RaggedArray:
    """A shard's ragged array: memory-mapped data plus its shapes table; items are cut out on demand."""

    def __init__(self, folder: Path, name: str):
        self.shapes = np.load(folder / f"{name}{SHAPES_SUFFIX}.npy")
        self.data = np.load(folder / f"{name}.npy", mmap_mode="r")
        sizes = np.where(self.shapes < 0, 1, self.shapes).prod(axis=1)  # a (n, 0) table: all scalars
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if self.offsets[-1] != len(self.data):
            raise ValueError(f"ragged array {name} in {folder}: shapes table and data disagree")
        self._shapes = shapes_of(self.shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def item(self, i: int) -> np.ndarray:
        """Item ``i`` as a read-only view into the memory map."""
        return self.data[self.offsets[i] : self.offsets[i + 1]].reshape(self._shapes[i])

    def take(self, rows: Sequence[int], dtype: Any = None) -> list[np.ndarray]:
        """Copies of the items at ``rows`` (floating items cast to ``dtype`` when given)."""
        return [cast_copy(self.item(int(i)), dtype) for i in rows]


def cast_copy(value: np.ndarray, dtype: Any) -> np.ndarray:
    """A copy of ``value``; floating data cast to ``dtype`` when given."""
    if dtype is not None and np.issubdtype(value.dtype, np.floating):
        return value.astype(dtype)
    return np.array(value)
