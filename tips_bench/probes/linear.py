"""Linear classification on cached global embeddings: a grid of learning rates trained as parallel heads.

Follows DINOv2's linear evaluation (``dinov2/eval/linear.py``): one linear head per learning rate, all fed the
same batches (one pass over the features per epoch for the whole grid), each with its own learning rate in one
optimiser (SGD, momentum 0.9, cosine decay to 0 per step), cross-entropy summed over heads (so each head gets
its own gradient), the best head picked by top-1. Differences: the heads see cached global embeddings (DINOv2
also grids over the last 1 or 4 blocks' CLS tokens, with or without average-pooled patch tokens, on augmented
images), and the best head is picked on a held-out fraction of train rows (DINOv2 picks it on the evaluation set).

Memory is bounded, whatever the number of train rows: the train features are never loaded whole. Each epoch
reads them in a shuffled order that is a deterministic function of (seed, epoch): contiguous blocks of
``shuffle_block`` rows in a random order, gathered ``shuffle_window`` rows at a time (one memory-mapped shard
read at a time, kept in the cache's dtype) and shuffled within the window. Standardisation statistics, held-out
selection and evaluation are sequential streaming passes. The memory is the heads and their optimiser state,
one window and one batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tips_bench.cache import CacheEntry
from tips_bench.metrics import top_k_accuracy
from tips_bench.probes.stream import rechunk
from tips_bench.probes.training import LR_SCHEDULES, OPTIMIZERS, deterministic, lr_factor

__all__ = ["INITS", "LinearGridResult", "LinearProbeConfig", "holdout_mask", "train_linear_grid"]

INITS = ("torch", "normal")
LABEL = "label"


@dataclass(frozen=True)
class LinearProbeConfig:
    """The recipe of :func:`train_linear_grid`.

    ``lrs``: the learning rate of each head (already scaled, e.g. DINOv2's grid x batch / 256). ``init``:
    ``torch`` (nn.Linear's default) or ``normal`` (weights N(0, 0.01²), bias 0, as DINOv2). ``standardize``:
    subtract the mean and divide by the standard deviation (+1e-6) of the training rows, per dimension.
    ``val_fraction`` of the train rows (chosen by ``val_seed``, the same for every probe seed) is held out to
    pick the best head; 0 = no hold-out (allowed with one learning rate only).
    """

    lrs: tuple[float, ...]
    epochs: int = 10
    batch_size: int = 256
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    init: str = "torch"
    standardize: bool = True
    val_fraction: float = 0.0
    val_seed: int = 0
    shuffle_block: int = 32
    shuffle_window: int = 65536

    def __post_init__(self) -> None:
        if not self.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ValueError(f"every learning rate must be a positive number, got {list(self.lrs)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("weight_decay and warmup_epochs must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if len(self.lrs) > 1 and self.val_fraction == 0:
            raise ValueError(f"{len(self.lrs)} learning rates need a held-out part of train to pick the best: "
                             "set val_fraction > 0")
        if self.shuffle_block < 1 or self.shuffle_window < 1:
            raise ValueError("shuffle_block and shuffle_window must be >= 1")


@dataclass
class LinearGridResult:
    """The trained heads, the standardisation and which head was picked (index into ``lrs``)."""

    heads: nn.ModuleList
    lrs: tuple[float, ...]
    mean: torch.Tensor | None
    std: torch.Tensor | None
    chosen: int
    heldout_top1: list[float] = field(default_factory=list)  # per head, NaN for a diverged head
    final_loss: list[float] = field(default_factory=list)    # per head, mean over the last epoch
    steps: int = 0
    train_seconds: float = 0.0
    n_fit: int = 0
    n_heldout: int = 0

    @property
    def chosen_lr(self) -> float:
        return self.lrs[self.chosen]

    def prepare(self, x: np.ndarray, device: str | torch.device) -> torch.Tensor:
        """Features as the heads see them (float32, standardised when trained so)."""
        t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        return (t - self.mean) / self.std if self.mean is not None else t

    @torch.inference_mode()
    def evaluate(self, entry: CacheEntry, key: str, device: str | torch.device = "cpu",
                 ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
        """Top-k accuracy (percent, ``top1``, ``top5``) of the chosen head on every row of ``entry``."""
        head = self.heads[self.chosen].eval()
        hits, total = np.zeros(len(ks)), 0
        for x, y in _sequential(entry, key, None, 1024):
            acc = top_k_accuracy(head(self.prepare(x, device)).cpu().numpy(), y, k=ks)
            hits += [acc[f"top{k}"] * len(y) / 100.0 for k in ks]
            total += len(y)
        return {f"top{k}": (float(h / total * 100.0) if total else float("nan")) for k, h in zip(ks, hits, strict=True)}


def holdout_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out train rows: round(fraction · n) of them (at least 1 when fraction > 0), chosen
    uniformly by ``seed``. One byte per row; raises ValueError when no row would be left to train on."""
    mask = np.zeros(n, dtype=bool)
    if fraction <= 0:
        return mask
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise ValueError(f"holding out {n_val} of {n} train rows leaves none to train on; lower val_fraction")
    mask[np.random.default_rng(seed % 2**32).permutation(n)[:n_val]] = True
    return mask


def _sequential(entry: CacheEntry, key: str, keep: np.ndarray | None, rows: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features float32, labels int64) in row order, ``rows`` at a time, only rows where ``keep`` (if given)."""
    start = 0
    batches = entry.iter_batches([key, LABEL], rows, dtype=np.float32)
    for x, y in rechunk(((b[key], b[LABEL]) for b in batches), rows):
        n = len(y)
        if keep is not None:
            sel = keep[start : start + n]
            x, y = x[sel], y[sel]
        start += n
        if len(y):
            yield x, y.astype(np.int64)


def _feature_stats(entry: CacheEntry, key: str, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (ddof 0) of the kept rows, merged chunk by chunk in float64."""
    n, mean, m2 = 0, None, None
    for x, _ in _sequential(entry, key, keep, 8192):
        x = x.astype(np.float64)
        nb, mb = len(x), x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta, tot = mb - mean, n + nb
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n * nb / tot
        n = tot
    assert mean is not None and m2 is not None
    return mean.astype(np.float32), (np.sqrt(m2 / n) + 1e-6).astype(np.float32)


def _shuffled_batches(entry: CacheEntry, key: str, keep: np.ndarray, cfg: LinearProbeConfig, seed: int, epoch: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of the kept rows in batches: blocks in random order, gathered by windows, shuffled per window.

    Batches are consecutive runs of ``batch_size`` rows of that order (across window boundaries); the last may be
    short. The order depends on (seed, epoch, number of rows, ``shuffle_block``, ``shuffle_window``) only.
    """
    rng = np.random.default_rng([seed % 2**32, epoch])
    return rechunk(_window_pieces(entry, key, keep, cfg, rng), cfg.batch_size)


def _window_pieces(entry: CacheEntry, key: str, keep: np.ndarray, cfg: LinearProbeConfig, rng: np.random.Generator
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n, block = len(keep), cfg.shuffle_block
    order = rng.permutation(-(-n // block))
    per_window = max(1, cfg.shuffle_window // block)
    for w in range(0, len(order), per_window):
        starts = np.sort(order[w : w + per_window]) * block
        rows = (starts[:, None] + np.arange(block)).ravel()
        rows = rows[rows < n]
        rows = rows[keep[rows]]
        if not len(rows):
            continue
        x, y = entry.read_rows(key, rows, dtype=None), entry.read_rows(LABEL, rows, dtype=None)
        perm = rng.permutation(len(rows))
        for i in range(0, len(perm), cfg.batch_size):
            take = perm[i : i + cfg.batch_size]
            yield x[take], y[take]
        del x, y  # release this window before the next one is read


def _make_heads(dim: int, num_classes: int, count: int, init: str) -> nn.ModuleList:
    """One head after the other from the current RNG state, so head i starts alike whatever the grid's length."""
    heads = nn.ModuleList()
    for _ in range(count):
        head = nn.Linear(dim, num_classes)  # torch's init (kaiming-uniform weight, uniform bias)
        if init == "normal":
            nn.init.normal_(head.weight, mean=0.0, std=0.01)
            nn.init.zeros_(head.bias)
        heads.append(head)
    return heads


def _optimizer(heads: nn.ModuleList, cfg: LinearProbeConfig) -> torch.optim.Optimizer:
    groups = [{"params": list(h.parameters()), "lr": lr} for h, lr in zip(heads, cfg.lrs, strict=True)]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)


def train_linear_grid(entry: CacheEntry, key: str, num_classes: int, cfg: LinearProbeConfig, seed: int,
                      device: str | torch.device = "cpu", progress: bool = False, desc: str = "linear"
                      ) -> LinearGridResult:
    """Train one linear head per learning rate on ``entry``'s ``key`` features and ``label`` targets; pick one.

    Deterministic for a ``seed`` (initial weights and batch order) on CPU. A head whose loss stops being finite
    is dropped from the selection (its held-out top-1 is NaN); FloatingPointError when every head diverged.
    With a held-out part, the head with the best held-out top-1 is chosen (ties: the first in ``cfg.lrs``);
    without, the only head is.
    """
    n = entry.num_items
    heldout = holdout_mask(n, cfg.val_fraction, cfg.val_seed)
    fit = ~heldout
    n_fit = int(fit.sum())
    dim = entry.item_shape(key)[0]
    mean = std = None
    if cfg.standardize:
        m, s = _feature_stats(entry, key, fit)
        mean, std = torch.from_numpy(m).to(device), torch.from_numpy(s).to(device)
    result = LinearGridResult(heads=nn.ModuleList(), lrs=tuple(cfg.lrs), mean=mean, std=std, chosen=0,
                              n_fit=n_fit, n_heldout=n - n_fit)
    steps_per_epoch = -(-n_fit // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    start = time.perf_counter()
    cuda = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with deterministic(seed, cuda):
        heads = _make_heads(dim, num_classes, len(cfg.lrs), cfg.init).to(device)
        batches = partial(_shuffled_batches, entry, key, fit, cfg, seed)  # batches(epoch)
        alive, last_losses = _fit(heads, batches, result.prepare, cfg, total, warmup, device, progress, desc)
    result.heads, result.steps = heads, total
    result.final_loss = [float(v) if a else float("nan") for v, a in zip(last_losses, alive, strict=True)]
    result.train_seconds = time.perf_counter() - start
    if result.n_heldout:
        result.heldout_top1 = _heldout_top1(entry, key, heldout, result, alive, device)
        scores = [s if math.isfinite(s) else -1.0 for s in result.heldout_top1]
        result.chosen = int(np.argmax(scores))  # first maximum: the earliest learning rate of the grid wins ties
    else:
        result.chosen = int(torch.nonzero(alive)[0])
    return result


def _fit(heads: nn.ModuleList, batches: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]],
         prepare: Callable[[np.ndarray, str | torch.device], torch.Tensor], cfg: LinearProbeConfig, total: int,
         warmup: int, device: str | torch.device, progress: bool, desc: str) -> tuple[torch.Tensor, list[float]]:
    """The training loop: every head on every batch, each at its own lr x the schedule's factor of the step.

    Returns which heads stayed finite and each head's mean loss over the last epoch.
    """
    optimizer = _optimizer(heads, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup,
                                                                                    cfg.lr_schedule))
    alive = torch.ones(len(heads), dtype=torch.bool)
    sums, count = torch.zeros(len(heads), dtype=torch.float64), 0
    heads.train()
    with tqdm(total=total, desc=desc, leave=False, disable=not progress) as bar:
        for epoch in range(cfg.epochs):
            sums, count = torch.zeros(len(heads), dtype=torch.float64), 0
            for xb, yb in batches(epoch):
                x, y = prepare(xb, device), torch.from_numpy(yb.astype(np.int64)).to(device)
                losses = torch.stack([F.cross_entropy(h(x), y) for h in heads])
                values = losses.detach().double().cpu()
                alive &= torch.isfinite(values)
                if not alive.any():
                    raise FloatingPointError(f"{desc}: the loss of every head became non-finite at epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()  # heads share no parameter: each gets the gradient of its own loss
                optimizer.step()
                scheduler.step()
                sums += values
                count += 1
                bar.update(1)
                if progress:
                    bar.set_postfix(epoch=epoch, loss=f"{float(values[alive].min()):.4g}", refresh=False)
    heads.eval()
    return alive, (sums / max(count, 1)).tolist()


@torch.inference_mode()
def _heldout_top1(entry: CacheEntry, key: str, heldout: np.ndarray, result: LinearGridResult, alive: torch.Tensor,
                  device: str | torch.device) -> list[float]:
    hits, total = np.zeros(len(result.heads)), 0
    for x, y in _sequential(entry, key, heldout, 1024):
        feats = result.prepare(x, device)
        target = torch.from_numpy(y).to(device)
        hits += [int((h(feats).argmax(dim=1) == target).sum()) for h in result.heads]
        total += len(y)
    return [float(h / total * 100.0) if a else float("nan") for h, a in zip(hits, alive.tolist(), strict=True)]
