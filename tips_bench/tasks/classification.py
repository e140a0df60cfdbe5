"""Image-level tasks on global embeddings: kNN classification, linear classification, kNN retrieval."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from tips_bench.metrics import top_k_accuracy
from tips_bench.probes.knn import knn_predict, knn_retrieval_recall_at_1
from tips_bench.probes.training import Schedule, train_probe
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, num_classes


def _globals_and_labels(ctx: EvalContext, role: str) -> tuple[np.ndarray, np.ndarray]:
    entry = ctx.entries[role]
    return entry.read(global_key(ctx), dtype=np.float32), entry.read("label").astype(np.int64)


@register_task_type
class KnnTask(Task):
    """DINOv2 weighted kNN on L2-normalised global embeddings (k in {10, 20, 100, 200}, T = 0.07)."""

    type_name = "knn"

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        train, train_y = _globals_and_labels(ctx, "train")
        test, test_y = _globals_and_labels(ctx, "eval")
        ks = tuple(int(k) for k in self.d.p("ks", [10, 20, 100, 200]))
        preds = knn_predict(train, train_y, test, num_classes(ctx), ks=ks,
                            temperature=float(self.d.p("temperature", 0.07)))
        out = {f"top1@k{k}": float((preds[k] == test_y).mean() * 100.0) for k in ks}
        out["top1"] = out[f"top1@k{int(self.d.p('headline_k', 20))}"]
        return {m: v for m, v in out.items() if m in self.d.metrics}


@register_task_type
class LinearClassificationTask(Task):
    """A linear classifier (softmax regression) on frozen global embeddings, trained with AdamW."""

    type_name = "linear_classification"

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        train, train_y = _globals_and_labels(ctx, "train")
        test, test_y = _globals_and_labels(ctx, "eval")
        mean, std = train.mean(0), train.std(0) + 1e-6  # standardise with train statistics
        x, xt = torch.from_numpy((train - mean) / std), torch.from_numpy((test - mean) / std)
        y = torch.from_numpy(train_y)
        torch.manual_seed(ctx.seed)
        head = torch.nn.Linear(x.shape[1], num_classes(ctx))
        probe = self.d.p("probe", {})
        bs = int(probe.get("batch_size", 256))
        schedule = Schedule(epochs=int(probe.get("epochs", 100)), lr=float(probe.get("lr", 1e-3)),
                            weight_decay=float(probe.get("weight_decay", 1e-4)))
        gen = torch.Generator().manual_seed(ctx.seed)

        def batches(epoch: int):
            order = torch.randperm(len(x), generator=gen)
            for b in range(0, len(x), bs):
                idx = order[b : b + bs]
                yield {"x": x[idx], "y": y[idx]}

        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy
        train_probe(head, batches, lambda m, b: loss(m(b["x"]), b["y"]), schedule,
                    steps_per_epoch=-(-len(x) // bs), seed=ctx.seed, progress=ctx.progress, desc=self.d.name)
        with torch.inference_mode():
            logits = head(xt).numpy()
        ctx.timings["probe_train_s"] = round(time.perf_counter() - t0, 3)
        acc = top_k_accuracy(logits, test_y, k=(1, 5))
        return {m: v for m, v in acc.items() if m in self.d.metrics}


@register_task_type
class KnnRetrievalTask(Task):
    """UnED-style instance retrieval: R@1 of each query against the merged index (self-match dropped)."""

    type_name = "knn_retrieval"

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        query, qy = _globals_and_labels(ctx, "eval")
        index, iy = _globals_and_labels(ctx, "train")
        q_ds, i_ds = ctx.datasets["eval"], ctx.datasets["train"]
        if hasattr(q_ds, "domain_ids") and hasattr(i_ds, "domain_ids"):
            qy = np.stack([qy, np.asarray(q_ds.domain_ids)[: len(qy)]], axis=1)
            iy = np.stack([iy, np.asarray(i_ds.domain_ids)[: len(iy)]], axis=1)
        self_ids = getattr(ctx.datasets.get("eval"), "self_index", None)
        r1 = knn_retrieval_recall_at_1(query, qy, index, iy, exclude_self_ids=self_ids)
        return {"R@1": r1}


_ = ClassVar  # keep the import for type checkers of subclasses
