"""``mode: faithful``: dense probes trained on the reference protocols' augmented views.

Two ways to draw the views (the task's ``faithful.views``):

* ``views: K > 0``: K augmented views of every training image are drawn once (seeded by the task's
  ``data_seed``, not the probe seed, so every seed and every later run shares them), encoded through the
  feature cache like any split, and the probe trains the reference number of steps on shuffled passes
  over them. The backbone runs K times per training image, once.
* ``views: 0``: the backbone runs in the loop, on a fresh augmentation of every image in every pass, as the
  references do; nothing is cached. Exact, and as expensive as the reference.

``benchmarks/protocols.py`` measures both against ``mode: cached`` on the synthetic world.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from tips_bench.augment import AugmentedViews, OnlineAugmented, training_frame
from tips_bench.extract import ViewEncoder, produce_batches


@dataclass(frozen=True)
class Steps:
    """Optimiser steps of the faithful schedule and of its warm-up."""

    steps: int
    warmup: int


def faithful_stream(task: Any, ctx: Any, layers: list[str], cls_names: list[str]):
    """``(batches(epoch), Steps)``: an endless stream of training view batches and the schedule length."""
    from tips_bench.runner import build_request
    from tips_bench.tasks.dense import group_views, view_batches

    spec = task.d.spec.faithful
    batch = task.d.spec.probe.batch_size
    train = ctx.datasets["train"]
    total = Steps(spec.total_steps(len(train), batch), spec.warmup_steps(len(train), batch))
    frame = training_frame(ctx.frame)
    request = replace(build_request(task, "train", ctx.backbone), targets=task.targets)  # views carry only these
    seed = int(task.d.p("data_seed", 0))
    if spec.views > 0:
        views = AugmentedViews(train, spec.augment, ctx.frame, views=spec.views, seed=seed, targets=task.targets,
                               image_pad=_pad_colour(ctx))
        entry = ctx.extra["extract"](views, request, frame, f"{task.d.name}/train-views")

        def cached(epoch: int) -> Iterator[dict[str, Any]]:
            passes = 0
            while True:  # shuffled passes over the cached views until the schedule's steps are taken
                yield from view_batches(entry, layers, cls_names, task.targets, batch,
                                        seed=ctx.seed * 100_003 + passes)
                passes += 1

        return cached, total

    online = OnlineAugmented(train, spec.augment, ctx.frame, seed=seed, targets=task.targets,
                             image_pad=_pad_colour(ctx))
    backbone = ctx.load_backbone()
    encoder = ViewEncoder(backbone, frame, request, batch)

    def in_the_loop(epoch: int) -> Iterator[dict[str, Any]]:
        passes = 0
        while True:
            online.set_epoch(passes)
            source = produce_batches(backbone, online, 0, len(online), frame, request, batch, 0, counter=encoder)
            for views in group_views(source, layers, cls_names, task.targets, batch):
                ctx.timings["online_forward_views"] = encoder.forward_items  # the loop may stop mid-pass
                yield views
            passes += 1

    return in_the_loop, total


def _pad_colour(ctx: Any) -> tuple[int, int, int]:
    """The backbone's mean colour: the references pad normalised images with zeros."""
    return tuple(int(round(255 * m)) for m in ctx.backbone.mean)
