"""Numeric precision of feature extraction: fp32, or bf16 / fp16 autocast (PyTorch's mixed precision).

The default is bf16 on CUDA (tensor-core throughput with fp32's exponent range) and fp32 on CPU (bf16 autocast
is fast only on CPUs with AMX-BF16 or AVX512-BF16; elsewhere it is slower than fp32). The precision is part of the
feature cache key and of every result row, so features of different precisions are never mixed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from tips_bench.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str | None, device: str) -> str:
    """``precision`` checked, or the default for the device (bf16 on CUDA, fp32 elsewhere)."""
    if precision is None:
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision} is not one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """Autocast to ``precision`` on the device's type (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision]):
        yield
