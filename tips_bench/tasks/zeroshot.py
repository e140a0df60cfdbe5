"""Zero-shot tasks through the text tower: image classification and semantic segmentation."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from tips_bench.metrics import SegmentationMeter, top_k_accuracy
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import class_names, class_text_embeddings, global_key, l2n, to_torch

#: The 9 templates of the TIPS zero-shot segmentation notebook (TCL's subset of the CLIP prompts).
TCL_TEMPLATES = ("itap of a {c}.", "a bad photo of a {c}.", "a origami {c}.", "a photo of the large {c}.",
                 "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}.", "a photo of many {c}.",
                 "a photo of {c}s.")


def templates_for(name: str) -> tuple[str, ...]:
    """A named prompt set: 'openai_imagenet' (CLIP's 80, from open_clip), 'tcl' (9), 'simple' (1)."""
    if name == "openai_imagenet":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES)
    if name == "tcl":
        return TCL_TEMPLATES
    return ("a photo of a {c}.",)


@register_task_type
class ZeroShotClassificationTask(Task):
    """Prompt-ensembled class embeddings vs the image embedding (cosine), top-1/top-5."""

    type_name = "zeroshot_classification"
    needs: ClassVar[frozenset[str]] = frozenset({"image_global", "text"})

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        classes = class_text_embeddings(ctx, class_names(ctx), templates_for(self.d.p("templates", "simple")))
        images = l2n(ctx.entries["eval"].read(global_key(ctx), dtype=np.float32))
        labels = ctx.entries["eval"].read("label").astype(np.int64)
        acc = top_k_accuracy(images @ classes.T, labels, k=(1, 5))
        return {m: v for m, v in acc.items() if m in self.d.metrics}


@register_task_type
class ZeroShotSegmentationTask(Task):
    """TIPSv2 protocol: cosine between text-aligned patch features and class prompts, upsampled, argmax."""

    type_name = "zeroshot_segmentation"
    needs: ClassVar[frozenset[str]] = frozenset({"dense", "text"})

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=False, text_dense=True, targets=("seg",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        names = class_names(ctx)
        classes = torch.from_numpy(class_text_embeddings(ctx, names, templates_for(self.d.p("templates", "tcl"))))
        ignore = int(self.d.p("ignore_index", 255))
        meter = SegmentationMeter(len(names), ignore_index=ignore)
        for batch in ctx.batches("eval", ["text_dense", "seg"]):
            b = to_torch(batch)
            dense = F.normalize(b["text_dense"].float(), dim=1)
            logits = torch.einsum("bdhw,cd->bchw", dense, classes)
            logits = F.interpolate(logits, size=tuple(b["seg"].shape[1:]), mode="bilinear", align_corners=False)
            meter.update(logits.argmax(1).numpy(), batch["seg"].astype(np.int64))
        scores = meter.compute()
        return {m: v for m, v in scores.items() if m in self.d.metrics}
