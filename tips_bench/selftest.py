"""``tips-bench selftest``: every task on the ``oracle`` backbone, its headline beside its known optimum.

The oracle's features encode the ground truth of the views it sees (:mod:`tips_bench.backbones.oracle`), so
each task has a known best score, and the whole pipeline (dataset, frame, cache, probe, merge, metric) must
reach it. The optimum of each task type is determined independently of the probe:

* segmentation, depth, normals: the patch-level ground truth decoded without training (``head.kind:
  oracle``) through the task's own frame and metric; the trained probe must come within a tolerance;
* zero-shot segmentation: the mIoU of patch-majority labels computed from the ground truth and the frame's
  view geometry alone (no features, no merge code);
* kNN, linear and zero-shot classification: 100 (one-hot class codes are linearly separable);
* image-text retrieval: recall of an ideal similarity (orthogonal caption codes) on the split's captions,
  which is below 100 only where identical captions belong to different images;
* UnED retrieval: 100 times the share of queries with a relevant index item (per domain, averaged);
* correspondence: the headline of the ground-truth points snapped to the centres of the prediction grid. The
  oracle's keypoint codes are sampled per patch, so keypoints closer than a patch blur into each other and the
  oracle reaches about 80 % of it on the dense synthetic pairs: the bound is 75 % of the optimum, which still
  catches any frame error (predictions in the wrong frame score near 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tips_bench.backbones.spec import get_backbone_spec
from tips_bench.frames import Frame, map_points, resize_nearest
from tips_bench.metrics import SegmentationMeter, correspondence_recall, pck, retrieval_recall
from tips_bench.runner import Runner, RunOptions, overrides_per_task
from tips_bench.tasks.base import TaskDefinition, get_task_definition, make_task

ORACLE = "oracle"
#: Allowed shortfall of a trained probe below the patch-level optimum, per task type.
TOLERANCE = {"segmentation": ("points", 5.0), "depth": ("relative", 0.25), "normals": ("degrees", 10.0),
             "zeroshot_segmentation": ("points", 5.0), "linear_classification": ("points", 1.0),
             "correspondence": ("relative", 0.25)}


@dataclass(frozen=True)
class Check:
    """One task's headline on the oracle against its optimum."""

    task: str
    metric: str
    higher_is_better: bool
    score: float
    optimum: float
    threshold: float
    how: str

    @property
    def ok(self) -> bool:
        if math.isnan(self.score):
            return False
        return self.score >= self.threshold - 1e-9 if self.higher_is_better else self.score <= self.threshold + 1e-9


def threshold_for(task_type: str, optimum: float, higher: bool) -> float:
    """The pass bound derived from the optimum (exact where nothing is trained or approximated)."""
    kind, amount = TOLERANCE.get(task_type, ("points", 0.0))
    if kind == "relative":  # a fraction of the optimum (depth errors; correspondence, see the module docstring)
        return optimum * (1 + amount) if not higher else optimum * (1 - amount)
    return optimum - amount if higher else optimum + amount


def run_selftest(tasks: Sequence[str], runner: Runner, opts: RunOptions) -> list[Check]:
    """Run each task on the oracle and determine its optimum (module docstring)."""
    checks = []
    per_task = overrides_per_task(tasks, opts.overrides)
    for name in tasks:
        task_opts = replace(opts, overrides=per_task[name])
        d = get_task_definition(name).with_overrides(task_opts.overrides)
        rows = runner.run(ORACLE, name, task_opts)
        score = next(r.value for r in rows if r.metric == d.headline)
        optimum, how = optimum_for(d, runner, task_opts)
        higher = d.higher_is_better[d.headline]
        checks.append(Check(name, d.headline, higher, score, optimum, threshold_for(d.type, optimum, higher), how))
    return checks


def optimum_for(d: TaskDefinition, runner: Runner, opts: RunOptions) -> tuple[float, str]:
    """The known optimum of a task's headline on the oracle, and how it was obtained."""
    if d.type in ("segmentation", "depth", "normals"):
        rows = runner.run(ORACLE, d.name, replace(opts, overrides={**opts.overrides, "head.kind": "oracle"}))
        return next(r.value for r in rows if r.metric == d.headline), "patch-level truth decoded untrained"
    if d.type in ("knn", "linear_classification", "zeroshot_classification"):
        return 100.0, "one-hot class codes"
    task = make_task(d)
    spec = get_backbone_spec(ORACLE)
    frame = task.frame(spec)
    datasets = {role: runner.open_split(task, role, split, frame, opts) for role, split in d.splits.items()}
    if d.type == "retrieval":
        return _retrieval_optimum(d, datasets["eval"]), "ideal caption codes (duplicates tie)"
    if d.type == "zeroshot_segmentation":
        return _patch_majority_miou(datasets["eval"], frame, d.spec.ignore_index), \
            "patch-majority labels (bilinear decoding can exceed them)"
    if d.type == "knn_retrieval":
        return _uned_optimum(datasets["eval"], datasets["train"]), "queries with a relevant index item"
    if d.type == "correspondence":
        return _snapped_pck(d, datasets["eval"], frame), "ground truth snapped to the prediction grid"
    raise ValueError(f"no known optimum for task type {d.type}")


def _retrieval_optimum(d: TaskDefinition, ds: Any) -> float:
    from tips_bench.tasks.retrieval import captions_of

    which = d.p("captions", "all")
    texts, owner = [], []
    for i in range(len(ds)):
        caps = captions_of(ds, i)
        chosen = caps if which == "all" else [caps[int(which)]]
        texts += [" ".join(c.lower().split()) for c in chosen]
        owner += [i] * len(chosen)
    vocab = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    image_codes = np.zeros((len(ds), len(vocab)))
    for i in range(len(ds)):
        for c in {" ".join(c.lower().split()) for c in captions_of(ds, i)}:
            image_codes[i, vocab[c]] = 1.0
    image_codes /= np.maximum(np.linalg.norm(image_codes, axis=1, keepdims=True), 1e-12)
    text_codes = np.eye(len(vocab))[[vocab[t] for t in texts]]
    return retrieval_recall(text_codes @ image_codes.T, np.asarray(owner), ks=(1,))[d.headline]


def _patch_majority_miou(ds: Any, frame: Frame, ignore: int) -> float:
    """mIoU of the majority label of every patch of every view, pasted back and resized to the original."""
    n_classes = int(ds.info.num_classes or len(ds.info.class_names))
    meter = SegmentationMeter(n_classes, ignore_index=ignore)
    p = frame.patch
    for i in range(len(ds)):
        seg = np.asarray(ds[i]["seg"]).astype(np.int64)
        resized = frame.resized_size(*seg.shape)
        full = resize_nearest(seg, resized)
        canvas = np.full(resized, ignore, np.int64)
        for y0, x0, y1, x1 in frame.views(*resized):
            view = frame.fit_target(full[y0:y1, x0:x1], ignore)
            h, w = view.shape[0] // p, view.shape[1] // p
            blocks = view[: h * p, : w * p].reshape(h, p, w, p).transpose(0, 2, 1, 3).reshape(h, w, p * p)
            major = np.zeros((h, w), np.int64)
            for r in range(h):
                for c in range(w):
                    vals = blocks[r, c][blocks[r, c] != ignore]
                    major[r, c] = np.bincount(vals).argmax() if vals.size else 0
            labels = resize_nearest(np.kron(major, np.ones((p, p), np.int64)), view.shape[:2])
            if frame.fit == "pad_center":
                fy, fx = (view.shape[0] - (y1 - y0)) // 2, (view.shape[1] - (x1 - x0)) // 2
                labels = labels[fy : fy + y1 - y0, fx : fx + x1 - x0]
            else:
                labels = resize_nearest(labels, (y1 - y0, x1 - x0))
            canvas[y0:y1, x0:x1] = labels
        meter.update(resize_nearest(canvas, seg.shape), seg)
    return float(meter.compute()["mIoU"])


def _uned_optimum(query: Any, index: Any) -> float:
    q_dom, i_dom = np.asarray(query.domain_ids), np.asarray(index.domain_ids)
    found: dict[int, list[bool]] = defaultdict(list)
    self_domains = {query.info.extra["domains"].index(d) for d in query.info.extra.get("self_indexed", ())}
    for k in range(len(query)):
        labels = set(query.label_sets[k])
        hits = [j for j in np.flatnonzero(i_dom == q_dom[k]) if labels & set(index.label_sets[j])]
        if q_dom[k] in self_domains:  # the query itself is in the index and excluded from its own ranking
            (q0, _), (i0, _) = query.slices[query.info.extra["domains"][q_dom[k]]], \
                index.slices[index.info.extra["domains"][q_dom[k]]]
            hits = [j for j in hits if j != i0 + k - q0]
        found[int(q_dom[k])].append(bool(hits))
    return float(np.mean([100.0 * np.mean(v) for v in found.values()]))


def _snapped_pck(d: TaskDefinition, ds: Any, frame: Frame) -> float:
    """The headline (recall at pixel thresholds or PCK) of each ground-truth point of b snapped to the centre of
    its cell of the prediction grid (patch grid x ``upsample``), in b's original frame."""
    upsample = int(d.p("upsample", 4))
    k = int(d.p("max_points", 64))
    preds, gts, valids, boxes = [], [], [], []
    for i in range(len(ds)):
        s = ds[i]
        size_b = np.asarray(s["image_b"]).shape[:2]
        resized = frame.resized_size(*size_b)
        cell = tuple(side / (side // frame.patch * upsample) for side in resized)
        pts = map_points(np.asarray(s["points_b"], np.float32)[:k], size_b, resized)
        snapped = np.stack([(np.floor((pts[:, 0] + 0.5) / cell[1]) + 0.5) * cell[1] - 0.5,
                            (np.floor((pts[:, 1] + 0.5) / cell[0]) + 0.5) * cell[0] - 0.5], axis=-1)
        preds.append(map_points(snapped, resized, size_b))
        gts.append(np.asarray(s["points_b"], np.float32)[:k])
        valids.append(np.asarray(s["points_valid"], bool)[:k])
        boxes.append(np.broadcast_to(np.asarray(s["bbox_b"], np.float32), (len(gts[-1]), 4)))  # per point
    pred, gt, valid = np.concatenate(preds), np.concatenate(gts), np.concatenate(valids)
    scores = correspondence_recall(pred, gt, valid, d.p("thresholds_px", []))
    # one "pair" per point so that every point carries its own target box
    scores["pck@0.1"] = pck(pred[:, None], gt[:, None], valid[:, None], np.concatenate(boxes),
                            alpha=float(d.p("pck_alpha", 0.1)))
    return scores[d.headline]
