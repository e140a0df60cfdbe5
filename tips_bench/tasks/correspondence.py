"""Multi-view / semantic correspondence by nearest neighbour in feature space (probe3d, SPair).

For every valid keypoint of image a, its feature is sampled bilinearly from a's patch map; the
prediction is the location of the most similar (cosine) feature in b's patch map, upsampled
bilinearly by ``upsample`` first. Predictions are mapped back to b's original frame, where the recall at
pixel thresholds and PCK@alpha of b's original bounding box are computed (SPair devkit convention).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from tips_bench.errors import TipsBenchError
from tips_bench.frames import map_points
from tips_bench.metrics import correspondence_recall, pck
from tips_bench.probes.vectors import unit
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import to_torch


def _grid_coords(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixel-centre coordinates -> grid_sample coordinates in [-1, 1] (align_corners=False)."""
    h, w = size
    return torch.stack([(points[..., 0] + 0.5) / w * 2 - 1, (points[..., 1] + 0.5) / h * 2 - 1], dim=-1)


def match_points(fa: torch.Tensor, fb: torch.Tensor, points_a: torch.Tensor, image_size: tuple[int, int],
                 upsample: int = 4) -> torch.Tensor:
    """Predicted (x, y) in b for each point of a. fa, fb: (B, D, h, w); points_a: (B, K, 2)."""
    query = F.grid_sample(fa, _grid_coords(points_a, image_size)[:, :, None], mode="bilinear",
                          align_corners=False)[..., 0]                                    # (B, D, K)
    target = F.interpolate(fb, scale_factor=upsample, mode="bilinear", align_corners=False) if upsample > 1 else fb
    bh, bw = target.shape[-2:]
    sim = torch.einsum("bdk,bdn->bkn", unit(query, dim=1), unit(target.flatten(2), dim=1))
    best = sim.argmax(-1)                                                                 # (B, K)
    gy, gx = best // bw, best % bw
    h, w = image_size
    return torch.stack([(gx + 0.5) * (w / bw) - 0.5, (gy + 0.5) * (h / bh) - 0.5], dim=-1).float()


@register_task_type
class CorrespondenceTask(Task):
    type_name = "correspondence"
    needs: ClassVar[frozenset[str]] = frozenset({"dense"})
    frame_resizes = ("square",)

    def __init__(self, definition):
        super().__init__(definition)
        if definition.spec.frame.fit != "none":
            raise TipsBenchError(f"task {definition.name}: correspondence frames take frame.fit none (a square "
                                 "resolution that is a multiple of the patch size)")

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers=self.d.p("layers", "last"), globals=False, pair=True,
                              max_points=int(self.d.p("max_points", 64)))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        layer = [n for n in ctx.layer_names if n.startswith("a_patches_")][int(self.d.p("layer", -1))]
        layer_b = "b_" + layer[2:]
        size = ctx.frame.square
        preds, gts, valids, boxes = [], [], [], []
        names = [layer, layer_b, "points_a", "points_b", "points_valid", "bbox_b", "orig_hw_b", "resized_hw_b"]
        for batch in ctx.batches("eval", names):
            b = to_torch({k: batch[k] for k in (layer, layer_b, "points_a")})
            pred = match_points(b[layer].float(), b[layer_b].float(), b["points_a"], size,
                                int(self.d.p("upsample", 4))).numpy()
            for i in range(len(pred)):  # back to b's original frame, where the devkit defines PCK
                preds.append(map_points(pred[i], tuple(batch["resized_hw_b"][i]), tuple(batch["orig_hw_b"][i])))
            gts.append(batch["points_b"])
            valids.append(batch["points_valid"])
            boxes.append(batch["bbox_b"])
        pred, gt, valid, box = np.stack(preds), *(np.concatenate(x) for x in (gts, valids, boxes))
        out = correspondence_recall(pred, gt, valid, self.d.p("thresholds_px", [5, 10, 20]))
        out["pck@0.1"] = pck(pred, gt, valid, box, alpha=float(self.d.p("pck_alpha", 0.1)))
        return {m: v for m, v in out.items() if m in self.d.metrics}
