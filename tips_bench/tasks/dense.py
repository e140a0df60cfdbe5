"""Dense prediction tasks with trained probes: semantic segmentation, depth, surface normals.

Protocols (recorded in each task file): a linear head (BatchNorm + 1x1 conv on patch tokens of
the last layer or the last four concatenated, DINOv2 / TIPS) or a DPT decoder (probe3d, TIPS
release heads); depth as 256-bin classification with linear normalisation (DINOv2 lin.1,
AdaBins); normals with an angular loss (probe3d). Predictions are scored at the cached target
resolution.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np
import torch

from tips_bench.errors import TipsBenchError
from tips_bench.metrics import DepthMeter, NormalsMeter, SegmentationMeter
from tips_bench.probes.heads import BinsDepthHead, DPTHead, LinearHead, to_normals
from tips_bench.probes.losses import (
    angular_loss,
    probe3d_depth_loss,
    segmentation_loss,
    silog_loss,
    uncertainty_angular_loss,
)
from tips_bench.probes.training import schedule_from_protocol, train_probe
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, num_classes, pick_layers, to_torch


class DenseTask(Task):
    """Shared training/evaluation loop; subclasses define outputs, loss and scoring."""

    needs: ClassVar[frozenset[str]] = frozenset({"dense"})
    targets: ClassVar[tuple[str, ...]] = ()

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers=self.d.p("layers", "last"), globals=True, targets=self.targets)

    def out_channels(self, ctx: EvalContext) -> int:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, out: torch.Tensor, batch: dict[str, np.ndarray], meter: Any) -> None:
        raise NotImplementedError

    def meter(self, ctx: EvalContext) -> Any:
        raise NotImplementedError

    def finish(self, meter: Any) -> dict[str, float]:
        return {m: v for m, v in meter.compute().items() if m in self.d.metrics}

    def make_head(self, ctx: EvalContext, layers: list[str]) -> torch.nn.Module:
        head = self.d.p("head", {"kind": "linear"})
        dims = [ctx.entries["train"].item_shape(n)[0] for n in layers]
        use_cls = bool(head.get("use_cls", False))
        if head.get("kind", "linear") == "dpt":
            return DPTHead(dims, self.out_channels(ctx), hidden=int(head.get("hidden", 256)), use_cls=use_cls)
        return LinearHead(dims, self.out_channels(ctx), use_cls=use_cls, upsample=int(head.get("upsample", 1)))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        head_cfg = self.d.p("head", {"kind": "linear"})
        layers = pick_layers(ctx, head_cfg.get("layers", "last"))
        gkey = global_key(ctx)
        names = [*layers, gkey, *self.targets]
        torch.manual_seed(ctx.seed)
        head = self.make_head(ctx, layers)
        probe = self.d.p("probe", {})
        schedule = schedule_from_protocol(probe)
        n_train = ctx.entries["train"].num_items
        steps = math.ceil(n_train / ctx.batch_size)

        def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            maps = [batch[n] for n in layers]
            cls = batch[gkey] if getattr(model, "use_cls", False) else None
            target = batch[self.targets[0]]
            return model(maps, cls, tuple(target.shape[1:3]))

        def batches(epoch: int):
            for b in ctx.batches("train", names, seed=ctx.seed * 100_003 + epoch):
                yield to_torch(b, ctx.device)

        head.to(ctx.device)

        t0 = time.perf_counter()
        train_probe(head, batches, lambda m, b: self.loss(forward(m, b), b), schedule, steps_per_epoch=steps,
                    seed=ctx.seed, progress=ctx.progress, desc=f"train {self.d.name}")
        t1 = time.perf_counter()
        meter = self.meter(ctx)
        head.eval()
        with torch.inference_mode():
            for b in ctx.batches("eval", names):
                self.score(forward(head, to_torch(b, ctx.device)).cpu(), b, meter)
        ctx.timings |= {"probe_train_s": round(t1 - t0, 3), "probe_eval_s": round(time.perf_counter() - t1, 3)}
        return self.finish(meter)


@register_task_type
class SegmentationTask(DenseTask):
    type_name = "segmentation"
    targets = ("seg",)

    def out_channels(self, ctx: EvalContext) -> int:
        return num_classes(ctx)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return segmentation_loss(out, batch["seg"].long(), ignore_index=int(self.d.p("ignore_index", 255)))

    def meter(self, ctx: EvalContext) -> SegmentationMeter:
        return SegmentationMeter(num_classes(ctx), ignore_index=int(self.d.p("ignore_index", 255)))

    def score(self, out: torch.Tensor, batch: dict[str, np.ndarray], meter: SegmentationMeter) -> None:
        meter.update(out.argmax(1).numpy(), batch["seg"].astype(np.int64))


@register_task_type
class DepthTask(DenseTask):
    type_name = "depth"
    targets = ("depth", "depth_valid")

    def _range(self) -> tuple[float, float]:
        lo, hi = self.d.p("depth_range", [0.001, 10.0])
        return float(lo), float(hi)

    def out_channels(self, ctx: EvalContext) -> int:
        return int(self.d.p("bins", 256))

    def make_head(self, ctx: EvalContext, layers: list[str]) -> torch.nn.Module:
        # Depth is taken at the head's own resolution, then the depth map (not 256 logit maps) is resized.
        lo, hi = self._range()
        head = BinsDepthHead(super().make_head(ctx, layers), lo, hi, n_bins=self.out_channels(ctx))
        head.use_cls = head.head.use_cls
        return head

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, 0]

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kind = self.d.p("loss", "silog")
        pred, gt, valid = self.predict(out), batch["depth"], batch["depth_valid"].bool()
        if kind == "probe3d":  # 10 x SigLoss + 0.5 x gradient matching (probe3d train_depth.py)
            return probe3d_depth_loss(pred, gt, valid, max_depth=self._range()[1])
        if kind != "silog":
            raise TipsBenchError(f"task {self.d.name}: unknown depth loss '{kind}'; use silog or probe3d")
        return silog_loss(pred, gt, valid)

    def meter(self, ctx: EvalContext) -> DepthMeter:
        lo, hi = self.d.p("eval_depth_range", self._range())
        return DepthMeter(min_depth=float(lo) if lo is not None else None, max_depth=float(hi) if hi else None)

    def score(self, out: torch.Tensor, batch: dict[str, np.ndarray], meter: DepthMeter) -> None:
        pred = self.predict(out).numpy()
        for i in range(len(pred)):
            meter.update(pred[i], batch["depth"][i], batch["depth_valid"][i])


@register_task_type
class NormalsTask(DenseTask):
    type_name = "normals"
    targets = ("normals", "normals_valid")

    def out_channels(self, ctx: EvalContext) -> int:
        return 4 if self.d.p("loss", "angular") == "uncertainty" else 3  # 4th channel: probe3d's kappa

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        normals, kappa = _split_normals(out)
        gt, valid = batch["normals"].permute(0, 3, 1, 2), batch["normals_valid"].bool()
        kind = self.d.p("loss", "angular")
        if kind == "uncertainty":  # Bae et al. uncertainty-aware angular loss, as probe3d
            return uncertainty_angular_loss(normals, kappa, gt, valid)
        if kind != "angular":
            raise TipsBenchError(f"task {self.d.name}: unknown normals loss '{kind}'; use angular or uncertainty")
        return angular_loss(normals, gt, valid)

    def meter(self, ctx: EvalContext) -> NormalsMeter:
        return NormalsMeter()

    def score(self, out: torch.Tensor, batch: dict[str, np.ndarray], meter: NormalsMeter) -> None:
        normals, _ = _split_normals(out)
        pred = normals.permute(0, 2, 3, 1).numpy()
        for i in range(len(pred)):
            meter.update(pred[i], batch["normals"][i], batch["normals_valid"][i])


def _split_normals(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    result = to_normals(out)
    return result if isinstance(result, tuple) else (result, None)
