"""Zero-shot tasks through the text tower: image classification and semantic segmentation."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from tips_bench.metrics import SegmentationMeter, top_k_accuracy
from tips_bench.probes.vectors import unit
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import class_names, class_text_embeddings, global_key, l2n, read_globals

#: The 9 templates of the TIPS zero-shot segmentation notebook (TCL's subset of the CLIP prompts).
TCL_TEMPLATES = ("itap of a {c}.", "a bad photo of a {c}.", "a origami {c}.", "a photo of the large {c}.",
                 "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}.", "a photo of many {c}.",
                 "a photo of {c}s.")


def templates_for(name: str, limit: int | None = None) -> tuple[str, ...]:
    """A named prompt set: 'openai_imagenet' (CLIP's 80, from open_clip), 'tcl' (9), 'simple' (1);
    ``limit`` keeps the first N (smoke runs; recorded as ``max_templates`` in the row)."""
    if name == "openai_imagenet":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        templates = tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES)
    elif name == "tcl":
        templates = TCL_TEMPLATES
    else:
        templates = ("a photo of a {c}.",)
    return templates[:limit] if limit else templates


@register_task_type
class ZeroShotClassificationTask(Task):
    """Prompt-ensembled class embeddings vs the image embedding (cosine), top-1/top-5."""

    type_name = "zeroshot_classification"
    needs: ClassVar[frozenset[str]] = frozenset({"image_global", "text"})

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        templates = templates_for(self.d.p("templates", "simple"), self.d.p("max_templates"))
        classes = class_text_embeddings(ctx, class_names(ctx), templates)
        images = l2n(read_globals(ctx.entries["eval"], global_key(ctx)))
        labels = ctx.entries["eval"].read("label").astype(np.int64)
        acc = top_k_accuracy(images @ classes.T, labels, k=(1, 5))
        return {m: v for m, v in acc.items() if m in self.d.metrics}


@register_task_type
class ZeroShotSegmentationTask(Task):
    """Cosine of text-aligned patch features and class prompts per view, merged in the task's frame (TIPS
    notebook: softmax per window, averaged over overlaps), upsampled to the original label size, argmax."""

    type_name = "zeroshot_segmentation"
    needs: ClassVar[frozenset[str]] = frozenset({"dense", "text"})
    frame_resizes = ("square", "keep_aspect", "none")
    frame_slides = True

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers=(), globals=False, text_dense=True, targets=("seg",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        names = class_names(ctx)
        templates = templates_for(self.d.p("templates", "tcl"), self.d.p("max_templates"))
        classes = torch.from_numpy(class_text_embeddings(ctx, names, templates))
        meter = SegmentationMeter(len(names), ignore_index=self.d.spec.ignore_index)
        entry = ctx.entries["eval"]
        ragged = entry.is_ragged("text_dense")
        for batch in ctx.batches("eval", ["text_dense", "seg", "boxes", "resized_hw", "orig_hw"], batch_size=4):
            for i in range(len(batch["orig_hw"])):
                dense = torch.from_numpy(batch["text_dense"][i] if ragged else batch["text_dense"][i][None]).float()
                cos = torch.einsum("vdhw,cd->vchw", unit(dense, dim=1), classes)
                boxes = [tuple(int(x) for x in b) for b in np.asarray(batch["boxes"][i]).reshape(-1, 4)]
                pred = ctx.frame.merge_views(list(cos), boxes, tuple(int(x) for x in batch["resized_hw"][i]),
                                             tuple(int(x) for x in batch["orig_hw"][i]))
                meter.update(pred.argmax(0).numpy(), np.asarray(batch["seg"][i]).astype(np.int64))
        scores = meter.compute()
        return {m: v for m, v in scores.items() if m in self.d.metrics}
