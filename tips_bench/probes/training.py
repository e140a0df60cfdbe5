"""Deterministic training loop for light probes on frozen, pre-extracted features.

The caller supplies ``batches(epoch)`` (an iterable of dicts of tensors, shuffled deterministically per epoch)
and ``loss_fn(head, batch)``; the loop owns the optimiser, the per-step learning-rate schedule (linear warm-up,
then cosine / linear decay to 0, as probe3d's ``cosine_decay_linear_warmup`` and mmseg's poly schedule used by
DINOv2's linear configs), seeding and determinism.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["Schedule", "deterministic", "lr_factor", "make_optimizer", "predict", "train_probe"]

T = TypeVar("T")
Batch = dict[str, torch.Tensor]

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class Schedule:
    """Probe optimisation recipe.

    ``lr_schedule``: "cosine" (half cosine to 0), "linear" (linear to 0 = mmseg poly with power 1) or
    "constant", each after ``warmup_epochs`` of linear warm-up (fractional epochs allowed; probe3d uses 1.5
    of 10). ``optimizer``: "adamw" (default β, eps) or "sgd" (momentum 0.9); weight decay applies to every
    parameter, biases and BatchNorm included.
    """

    epochs: int
    lr: float
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    optimizer: str = "adamw"
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_epochs >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


def schedule_from_protocol(probe: dict, epochs: int = 10, lr: float = 1e-3) -> Schedule:
    """The ``probe:`` mapping of a task file as a :class:`Schedule` (missing keys take the defaults)."""
    return Schedule(epochs=int(probe.get("epochs", epochs)), lr=float(probe.get("lr", lr)),
                    weight_decay=float(probe.get("weight_decay", 1e-4)),
                    warmup_epochs=float(probe.get("warmup_epochs", 0.0)),
                    optimizer=str(probe.get("optimizer", "adamw")), lr_schedule=str(probe.get("lr_schedule", "cosine")))


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, kind: str = "cosine") -> float:
    """Multiplier of the base lr at 0-based ``step`` of ``total_steps``.

    Warm-up: (step + 1) / warmup_steps for step < warmup_steps (so the first step is not wasted at lr 0).
    After it, with progress t = (step − warmup_steps) / (total_steps − warmup_steps) ∈ [0, 1):
    cosine 0.5·(1 + cos πt), linear 1 − t, constant 1. Steps past the end use t = 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min((step - warmup_steps) / span, 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "linear":
        return 1.0 - t
    if kind == "constant":
        return 1.0
    raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")


def make_optimizer(params: Iterable[nn.Parameter], schedule: Schedule) -> torch.optim.Optimizer:
    """The optimiser named by ``schedule`` at its base lr (the loop rescales the lr every step)."""
    params = list(params)
    if schedule.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    return torch.optim.SGD(params, lr=schedule.lr, momentum=0.9, weight_decay=schedule.weight_decay)


@contextmanager
def deterministic(seed: int, cuda_devices: Sequence[int] = ()) -> Iterator[None]:
    """Seed torch and enable deterministic algorithms inside the block; restore everything on exit.

    The CPU (and the listed CUDA devices') RNG state, the deterministic-algorithms flag (``warn_only=True``:
    an op without a deterministic kernel warns instead of failing) and ``cudnn.benchmark`` are restored.
    On CUDA, bit-exact cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set before CUDA starts.
    """
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=list(cuda_devices)):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
            torch.backends.cudnn.benchmark = prev_bench


def _reset_parameters(module: nn.Module) -> None:
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def train_probe(
    head: nn.Module,
    batches: Callable[[int], Iterable[Batch]],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    schedule: Schedule,
    steps_per_epoch: int,
    seed: int,
    progress: bool = False,
    desc: str = "probe",
    reinit: bool = True,
) -> dict[str, Any]:
    """Train ``head`` in place; returns ``{"final_loss", "steps", "train_seconds"}``.

    Under :func:`deterministic` (``seed``): with ``reinit`` (default) every submodule's ``reset_parameters``
    is called first, so the initial weights, and with them the result, depend on ``seed`` alone and not on
    the caller's RNG state; two runs with the same seed and batches give bit-identical weights on CPU.
    Each epoch takes at most ``steps_per_epoch`` batches from ``batches(epoch)``; the lr schedule spans
    ``epochs · steps_per_epoch`` steps, set before each step. ``final_loss`` is the mean loss over the last
    epoch's steps. The head is in train mode while training and left in eval mode. A non-finite loss raises
    FloatingPointError; an epoch that yields no batch raises ValueError.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    cuda = sorted({p.device.index or 0 for p in head.parameters() if p.device.type == "cuda"})
    total = schedule.epochs * steps_per_epoch
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    step = 0
    epoch_losses: list[float] = []
    start = time.perf_counter()
    with deterministic(seed, cuda):
        if reinit:
            _reset_parameters(head)
        params = [p for p in head.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the head has no trainable parameters")
        optimizer = make_optimizer(params, schedule)
        head.train()
        try:
            with tqdm(total=total, desc=desc, leave=False, disable=not progress) as bar:
                for epoch in range(schedule.epochs):
                    epoch_losses = []
                    for batch in itertools.islice(batches(epoch), steps_per_epoch):
                        for group in optimizer.param_groups:
                            group["lr"] = schedule.lr * lr_factor(step, total, warmup, schedule.lr_schedule)
                        loss = loss_fn(head, batch)
                        value = float(loss.detach())
                        if not math.isfinite(value):
                            raise FloatingPointError(f"{desc}: non-finite loss {value} at step {step}")
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        epoch_losses.append(value)
                        step += 1
                        bar.update(1)
                        if progress:
                            bar.set_postfix(epoch=epoch, loss=f"{value:.4g}", refresh=False)
                    if not epoch_losses:
                        raise ValueError(f"{desc}: batches({epoch}) yielded no batch")
        finally:
            head.eval()
    return {
        "final_loss": sum(epoch_losses) / len(epoch_losses),
        "steps": step,
        "train_seconds": time.perf_counter() - start,
    }


def predict(head: nn.Module, batches: Iterable[Batch], fn: Callable[[nn.Module, Batch], T]) -> Iterator[T]:
    """Yield ``fn(head, batch)`` for each batch, with the head in eval mode and under ``torch.inference_mode``.

    Inference mode is entered around each call only, so the caller's code between items runs normally.
    """
    head.eval()
    for batch in batches:
        with torch.inference_mode():
            out = fn(head, batch)
        yield out
