"""Re-cutting streams of row-aligned arrays (cache shards, batches) into blocks of a fixed number of rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["concat_rows", "rechunk"]


def concat_rows(held: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Concatenate a list of row-aligned tuples of arrays (numpy or torch) position by position."""
    if len(held) == 1:
        return held[0]
    cat = torch.cat if isinstance(held[0][0], torch.Tensor) else np.concatenate
    return tuple(cat([h[i] for h in held]) for i in range(len(held[0])))


def rechunk(parts: Iterable[tuple[Any, ...]], rows: int) -> Iterator[tuple[Any, ...]]:
    """Re-cut a stream of row-aligned tuples of arrays into tuples of exactly ``rows`` rows (the last may be short).

    Blocks therefore start at multiples of ``rows`` of the stream's row positions, whatever the input's cut
    (e.g. cache shards of any size); memory is at most about two output blocks.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    held: list[tuple[Any, ...]] = []
    count = 0
    for part in parts:
        n, start = len(part[0]), 0
        while start < n:
            take = min(rows - count, n - start)
            held.append(tuple(a[start : start + take] for a in part))
            count += take
            start += take
            if count == rows:
                yield concat_rows(held)
                held, count = [], 0
    if held:
        yield concat_rows(held)
