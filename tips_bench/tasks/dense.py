"""Dense prediction tasks with trained probes: semantic segmentation, depth, surface normals.

Protocols (recorded in each task file): a linear head (DINOv2 BNHead: BatchNorm + 1x1 conv on the patch
tokens of one or four blocks, optionally each with its own CLS token) or a DPT decoder (probe3d, TIPS);
depth as 256-bin classification with linear normalisation (DINOv2 lin.1, AdaBins); normals with an
angular loss (probe3d).

Training (``mode: cached``) runs on the views of each training image in the task's frame (the whole
image, or its sliding windows), with targets cropped from the image resized to the frame; ``mode:
faithful`` trains on augmented views (:mod:`tips_bench.augment`). Evaluation runs the head on every view
of an evaluation image, merges the views (:meth:`Frame.merge_views`) and scores the prediction at the
original label size.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from tips_bench.cache import CacheEntry
from tips_bench.metrics import DepthMeter, NormalsMeter, SegmentationMeter
from tips_bench.probes.heads import BinsDepthHead, DPTHead, LinearHead, to_normals
from tips_bench.probes.losses import (
    angular_loss,
    dinov2_sigloss,
    probe3d_depth_loss,
    segmentation_loss,
    silog_loss,
    uncertainty_angular_loss,
)
from tips_bench.probes.training import Schedule, train_probe
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, num_classes, pick_layers

#: Examples kept per evaluation for the HTML report's panels (first images of the eval split).
NUM_EXAMPLES = 4


class DenseTask(Task):
    """Shared training/evaluation loop; subclasses define outputs, loss and scoring."""

    needs: ClassVar[frozenset[str]] = frozenset({"dense"})
    targets: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = ""
    frame_resizes = ("square", "keep_aspect", "none")
    frame_slides = True

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers=self.d.p("layers", "last"), globals=True, targets=self.targets,
                              target_frame="input" if role == "train" else "original")

    # -- hooks of the task types ---------------------------------------------------------------
    def out_channels(self, ctx: EvalContext) -> int:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def meter(self, ctx: EvalContext) -> Any:
        raise NotImplementedError

    def score(self, pred: torch.Tensor, targets: dict[str, np.ndarray], meter: Any) -> np.ndarray:
        """Score one image's prediction (C, H, W) at the original size; return the displayable prediction."""
        raise NotImplementedError

    def finish(self, meter: Any) -> dict[str, float]:
        return {m: v for m, v in meter.compute().items() if m in self.d.metrics}

    def wrap_head(self, head: torch.nn.Module, ctx: EvalContext) -> torch.nn.Module:
        return head

    # -- heads ---------------------------------------------------------------------------------
    def make_head(self, ctx: EvalContext, layers: list[str]) -> torch.nn.Module:
        cfg = self.d.spec.head
        if cfg.kind == "oracle":
            from tips_bench.backbones.oracle import OracleHead

            classes = _train_classes(ctx.entries["train"], self.d.p("ignore_index", 255)) \
                if self.kind == "segmentation" else None
            return OracleHead(self.kind, self.out_channels(ctx), classes)
        entry = ctx.entries["train"]
        dims = [entry.item_shape(n)[0] if not entry.is_ragged(n) else entry.item_shapes(n)[0][1] for n in layers]
        own = cfg.cls == "own"
        cls_dim = None
        if cfg.use_cls and not own:
            key = global_key(ctx)
            cls_dim = entry.item_shape(key)[-1] if not entry.is_ragged(key) else entry.item_shapes(key)[0][-1]
        if cfg.kind == "dpt":
            head = DPTHead(dims, self.out_channels(ctx), hidden=cfg.hidden, use_cls=cfg.use_cls, cls_dim=cls_dim,
                           own_cls=own)
        else:
            head = LinearHead(dims, self.out_channels(ctx), use_cls=cfg.use_cls, upsample=cfg.upsample,
                              cls_dim=cls_dim, own_cls=own, batchnorm=cfg.batchnorm)
        return self.wrap_head(head, ctx)

    def _cls_names(self, ctx: EvalContext, layers: list[str]) -> list[str]:
        cfg = self.d.spec.head
        if not cfg.use_cls:
            return []
        if cfg.cls == "own":
            return ["cls_" + n.rsplit("_", 1)[1] for n in layers]
        return [global_key(ctx)]

    # -- the task ------------------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        layers = pick_layers(ctx, self.d.spec.head.layers)
        cls_names = self._cls_names(ctx, layers)
        head = self.make_head(ctx, layers).to(ctx.device)
        t0 = time.perf_counter()
        if self.d.spec.head.kind != "oracle":
            self._train(ctx, head, layers, cls_names)
        t1 = time.perf_counter()
        meter = self.meter(ctx)
        head.eval()
        examples: list[dict[str, Any]] = []
        with torch.inference_mode():
            for index, (views, boxes, resized, original, targets) in enumerate(
                    _eval_images(ctx.entries["eval"], layers, cls_names, self.targets)):
                maps, cls = _to_inputs(views, layers, cls_names, ctx.device, own=self.d.spec.head.cls == "own")
                out = head(maps, cls, None).float().cpu()
                pred = ctx.frame.merge_views(list(out), boxes, resized, original)
                shown = self.score(pred, targets, meter)
                if index < NUM_EXAMPLES:
                    examples.append({"index": index, "kind": self.kind, "prediction": shown,
                                     "target": targets[self.targets[0]], "patch_features": views[layers[-1]][0]})
        ctx.extra["examples"] = examples
        ctx.timings |= {"probe_train_s": round(t1 - t0, 3), "probe_eval_s": round(time.perf_counter() - t1, 3)}
        return self.finish(meter)

    def _train(self, ctx: EvalContext, head: torch.nn.Module, layers: list[str], cls_names: list[str]) -> None:
        spec = self.d.spec
        probe = spec.probe
        own = spec.head.cls == "own"
        if spec.mode == "faithful":
            from tips_bench.faithful import faithful_stream

            stream, total = faithful_stream(self, ctx, layers, cls_names)
            schedule = Schedule(epochs=1, lr=probe.lr, weight_decay=probe.weight_decay,
                                warmup_epochs=total.warmup / total.steps, optimizer=probe.optimizer,
                                lr_schedule=probe.lr_schedule)
            steps = total.steps
        else:
            entry = ctx.entries["train"]
            steps = steps_per_epoch(entry, probe.batch_size)

            def stream(epoch: int) -> Iterator[dict[str, Any]]:
                yield from view_batches(entry, layers, cls_names, self.targets, probe.batch_size,
                                        seed=ctx.seed * 100_003 + epoch)

            schedule = Schedule(epochs=probe.epochs, lr=probe.lr, weight_decay=probe.weight_decay,
                                warmup_epochs=probe.warmup_epochs, optimizer=probe.optimizer,
                                lr_schedule=probe.lr_schedule)

        def batches(epoch: int):
            for b in stream(epoch):
                maps, cls = _to_inputs(b, layers, cls_names, ctx.device, own=own, batched=True)
                yield {"maps": maps, "cls": cls, **{t: torch.from_numpy(b[t]).to(ctx.device) for t in self.targets}}

        def loss_fn(model: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
            size = tuple(b[self.targets[0]].shape[1:3])
            return self.loss(model(b["maps"], b["cls"], size), b)

        train_probe(head, batches, loss_fn, schedule, steps_per_epoch=steps, seed=ctx.seed, progress=ctx.progress,
                    desc=f"train {self.d.name}")


# ------------------------------------------------------------------------------------------------
# Streams of views
# ------------------------------------------------------------------------------------------------


def _train_classes(entry: CacheEntry, ignore: int) -> list[int]:
    """Every label present in a training entry's segmentation targets."""
    seen: set[int] = set()
    for batch in entry.iter_batches(["seg"], 16):
        for seg in batch["seg"]:
            seen.update(int(c) for c in np.unique(seg) if c != ignore)
    return sorted(seen)


def _view(value: Any, i: int, v: int, ragged: bool) -> np.ndarray:
    return value[i][v] if ragged else value[i]


def _boxes_of(batch: dict[str, Any], i: int) -> np.ndarray:
    boxes = batch["boxes"][i]
    return np.asarray(boxes).reshape(-1, 4)


def view_batches(entry: CacheEntry, layers: list[str], cls_names: list[str], targets: tuple[str, ...],
                 batch_size: int, seed: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of training views of equal size from a cache entry (see :func:`group_views`)."""
    names = [*layers, *cls_names, *targets, "boxes"]
    yield from group_views(entry.iter_batches(names, batch_size, seed=seed), layers, cls_names, targets, batch_size)


def group_views(batches: Iterable[dict[str, Any]], layers: list[str], cls_names: list[str],
                targets: tuple[str, ...], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of training views of equal size: features of each layer (B, D, h, w), CLS tokens (B, D) and
    targets cropped from the image resized to the frame (B, h_view, w_view[, C]).

    ``batches`` hold images (ragged arrays as lists of per-image (views, ...) arrays). Views are grouped by size
    and a batch is emitted as soon as ``batch_size`` views of one size are collected; the remainders are
    emitted at the end, so one pass over an entry yields :func:`steps_per_epoch` batches.
    """
    buffers: dict[tuple[int, int], list[dict[str, np.ndarray]]] = defaultdict(list)
    for batch in batches:
        for i in range(len(batch["boxes"])):
            for v, (y0, x0, y1, x1) in enumerate(_boxes_of(batch, i)):
                item = {n: _view(batch[n], i, v, isinstance(batch[n], list)) for n in (*layers, *cls_names)}
                for t in targets:
                    item[t] = np.ascontiguousarray(batch[t][i][y0:y1, x0:x1])
                key = (int(y1 - y0), int(x1 - x0))
                buffers[key].append(item)
                if len(buffers[key]) == batch_size:
                    yield _stack(buffers.pop(key))
    for items in buffers.values():
        yield _stack(items)


def steps_per_epoch(entry: CacheEntry, batch_size: int) -> int:
    """Batches :func:`view_batches` yields in one pass over an entry."""
    boxes = entry.read("boxes")
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for b in boxes:
        for y0, x0, y1, x1 in np.asarray(b).reshape(-1, 4):
            counts[(int(y1 - y0), int(x1 - x0))] += 1
    return max(1, sum(math.ceil(c / batch_size) for c in counts.values()))


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def _eval_images(entry: CacheEntry, layers: list[str], cls_names: list[str], targets: tuple[str, ...]
                 ) -> Iterator[tuple[dict[str, np.ndarray], list, tuple[int, int], tuple[int, int], dict]]:
    """Per evaluation image, in order: its views' features (views, ...), boxes, resized and original sizes,
    and its targets at the original label size."""
    names = [*layers, *cls_names, *targets, "boxes", "resized_hw", "orig_hw"]
    ragged = {n: entry.is_ragged(n) for n in names}
    for batch in entry.iter_batches(names, 4):
        for i in range(len(batch["orig_hw"])):
            views = {n: (batch[n][i] if ragged[n] else batch[n][i][None]) for n in (*layers, *cls_names)}
            boxes = [tuple(int(x) for x in b) for b in _boxes_of(batch, i)]
            tg = {t: np.asarray(batch[t][i]) for t in targets}
            yield (views, boxes, tuple(int(x) for x in batch["resized_hw"][i]),
                   tuple(int(x) for x in batch["orig_hw"][i]), tg)


def _to_inputs(views: dict[str, np.ndarray], layers: list[str], cls_names: list[str], device: str, own: bool,
               batched: bool = True) -> tuple[list[torch.Tensor], Any]:
    maps = [torch.from_numpy(np.ascontiguousarray(views[n])).float().to(device) for n in layers]
    tokens = [torch.from_numpy(np.ascontiguousarray(views[n])).float().to(device) for n in cls_names]
    if not tokens:
        return maps, None
    return maps, (tokens if own else tokens[0])


# ------------------------------------------------------------------------------------------------
# Task types
# ------------------------------------------------------------------------------------------------


@register_task_type
class SegmentationTask(DenseTask):
    type_name = "segmentation"
    targets = ("seg",)
    kind = "segmentation"

    def out_channels(self, ctx: EvalContext) -> int:
        return num_classes(ctx)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return segmentation_loss(out, batch["seg"].long(), ignore_index=self.d.spec.ignore_index)

    def meter(self, ctx: EvalContext) -> SegmentationMeter:
        return SegmentationMeter(num_classes(ctx), ignore_index=self.d.spec.ignore_index)

    def score(self, pred: torch.Tensor, targets: dict[str, np.ndarray], meter: SegmentationMeter) -> np.ndarray:
        labels = pred.argmax(0).numpy()
        meter.update(labels, targets["seg"].astype(np.int64))
        return labels


@register_task_type
class DepthTask(DenseTask):
    type_name = "depth"
    targets = ("depth", "depth_valid")
    kind = "depth"

    def _range(self) -> tuple[float, float]:
        lo, hi = self.d.spec.depth_range
        return float(lo), float(hi)

    def out_channels(self, ctx: EvalContext) -> int:
        return int(self.d.spec.bins)

    def wrap_head(self, head: torch.nn.Module, ctx: EvalContext) -> torch.nn.Module:
        # Depth is taken at the head's own resolution, then the depth map (not 256 logit maps) is resized.
        lo, hi = self._range()
        return BinsDepthHead(head, lo, hi, n_bins=self.out_channels(ctx))

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kind = self.d.spec.loss
        pred, gt, valid = out[:, 0], batch["depth"].float(), batch["depth_valid"].bool()
        if kind == "probe3d":  # 10 x SigLoss + 0.5 x gradient matching (probe3d train_depth.py)
            return probe3d_depth_loss(pred, gt, valid, max_depth=self._range()[1])
        if kind == "dinov2_sigloss":
            return dinov2_sigloss(pred, gt, valid)
        return silog_loss(pred, gt, valid)  # the schema allows only these three

    def meter(self, ctx: EvalContext) -> DepthMeter:
        lo, hi = self.d.spec.eval_depth_range or self._range()
        return DepthMeter(min_depth=float(lo) if lo is not None else None, max_depth=float(hi) if hi else None)

    def score(self, pred: torch.Tensor, targets: dict[str, np.ndarray], meter: DepthMeter) -> np.ndarray:
        depth = pred[0].numpy()
        meter.update(depth, targets["depth"], targets["depth_valid"])
        return depth


@register_task_type
class NormalsTask(DenseTask):
    type_name = "normals"
    targets = ("normals", "normals_valid")
    kind = "normals"

    def out_channels(self, ctx: EvalContext) -> int:
        return 4 if self.d.spec.loss == "uncertainty" else 3  # 4th channel: probe3d's kappa

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        normals, kappa = to_normals(out)
        gt, valid = batch["normals"].float().permute(0, 3, 1, 2), batch["normals_valid"].bool()
        if self.d.spec.loss == "uncertainty":  # Bae et al. uncertainty-aware angular loss, as probe3d
            return uncertainty_angular_loss(normals, kappa, gt, valid)
        return angular_loss(normals, gt, valid)

    def meter(self, ctx: EvalContext) -> NormalsMeter:
        return NormalsMeter()

    def score(self, pred: torch.Tensor, targets: dict[str, np.ndarray], meter: NormalsMeter) -> np.ndarray:
        normals, _ = to_normals(pred[None])
        n = normals[0].permute(1, 2, 0).numpy()
        meter.update(n, targets["normals"], targets["normals_valid"])
        return n
