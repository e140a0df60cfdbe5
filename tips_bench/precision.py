"""Numeric precision of feature extraction: fp32, or bf16 / fp16 autocast (PyTorch's mixed precision).

The default is bf16 on CUDA (tensor-core throughput with fp32's exponent range) and fp32 on CPU (bf16 autocast
is fast only on CPUs with AMX-BF16 or AVX512-BF16; elsewhere it is slower than fp32). The precision is part of the
feature cache key and of every result row, so features of different precisions are never mixed.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from tips_bench.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: /proc/cpuinfo flags of the x86 instructions that run bf16 matrix products natively.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...] | None:
    """The native-bf16 flags this CPU reports, or None where that cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def resolve_precision(precision: str | None, device: str) -> str:
    """``precision`` checked, or the default for the device (bf16 on CUDA, fp32 elsewhere).

    Reduced precision on a CPU without native bf16 instructions is allowed but slow (emulated: 0.19x of fp32
    on an AVX2-only machine, README "Speed and memory"); a one-line notice on stderr says so, once.
    """
    if precision is None:
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision} is not one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and torch.device(device).type == "cpu" and cpu_bf16_flags() == ():
        _notice_emulated(precision)
    return precision


@functools.cache
def _notice_emulated(precision: str) -> None:
    print(f"tips-bench: note: this CPU has no native bf16 instructions ({' or '.join(NATIVE_BF16_FLAGS)}), so "
          f"--precision {precision} is emulated and usually slower than fp32; drop it for speed",
          file=sys.stderr)


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """Autocast to ``precision`` on the device's type (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision]):
        yield
