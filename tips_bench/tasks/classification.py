"""Image-level tasks on global embeddings: kNN classification, linear classification, kNN retrieval."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from tips_bench.metrics import top_k_accuracy
from tips_bench.probes.knn import knn_predict, knn_retrieval_recall_at_1
from tips_bench.probes.training import schedule_from_protocol, train_probe
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, num_classes


def _globals_and_labels(ctx: EvalContext, role: str) -> tuple[np.ndarray, np.ndarray]:
    entry = ctx.entries[role]
    return entry.read(global_key(ctx), dtype=np.float32), entry.read("label").astype(np.int64)


class _GlobalTask(Task):
    """Tasks on global embeddings and image labels only."""

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))


@register_task_type
class KnnTask(_GlobalTask):
    """DINOv2 weighted kNN on L2-normalised global embeddings (k in {10, 20, 100, 200}, T = 0.07)."""

    type_name = "knn"

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
class LinearClassificationTask(_GlobalTask):
    """A linear classifier (softmax regression) on frozen global embeddings, trained with AdamW."""

    type_name = "linear_classification"

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
        schedule = schedule_from_protocol(probe, epochs=100)
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
class KnnRetrievalTask(_GlobalTask):
    """UnED-style instance retrieval: R@1 of each query against the merged index (self-match dropped)."""

    type_name = "knn_retrieval"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        query, qy = _globals_and_labels(ctx, "eval")
        index, iy = _globals_and_labels(ctx, "train")
        q_ds, i_ds = ctx.datasets["eval"], ctx.datasets["train"]
        if all(hasattr(ds, a) for ds in (q_ds, i_ds) for a in ("slices", "label_sets", "domain_ids")):
            scores = _uned_recall_at_1(query, index, q_ds, i_ds, ctx.device)
            return {m: v for m, v in scores.items() if m in self.d.metrics}
        if hasattr(q_ds, "domain_ids") and hasattr(i_ds, "domain_ids"):
            qy = np.stack([qy, np.asarray(q_ds.domain_ids)[: len(qy)]], axis=1)
            iy = np.stack([iy, np.asarray(i_ds.domain_ids)[: len(iy)]], axis=1)
        self_ids = getattr(ctx.datasets.get("eval"), "self_index", None)
        r1 = knn_retrieval_recall_at_1(query, qy, index, iy, exclude_self_ids=self_ids)
        return {"R@1": r1}


def _uned_recall_at_1(query: np.ndarray, index: np.ndarray, q_ds, i_ds, device: str = "cpu") -> dict[str, float]:
    """UnED's merged-index R@1 (nikosips/Universal-Image-Embeddings ``knn_utils.py``), per domain and averaged.

    ``q_ds`` / ``i_ds`` are :class:`~tips_bench.data.uned.UnedDataset` query / index splits, possibly cut to their
    first items (``--limit``). The nearest index item (cosine) is a hit when it has the query's domain and shares
    one of its class ids (``label_sets``). Where a domain's index file is its query file, query ``q`` of that domain
    sits at index position ``index_start + (q - query_start)`` and is excluded from its own ranking (UnED's
    ``throw_1st``). ``R@1`` = mean over the domains that have queries; ``R@1_pooled`` = over all queries.
    """
    nq, ni = len(query), len(index)
    q_dom, i_dom = np.asarray(q_ds.domain_ids)[:nq], np.asarray(i_ds.domain_ids)[:ni]
    self_ids = np.full(nq, -1, dtype=np.int64)
    for domain in q_ds.info.extra.get("self_indexed", ()):
        (q0, q1), (i0, _) = q_ds.slices[domain], i_ds.slices[domain]
        pos = np.arange(q0, min(q1, nq))
        self_ids[pos] = np.where(i0 + pos - q0 < ni, i0 + pos - q0, -1)
    q = torch.nn.functional.normalize(torch.from_numpy(query).to(device), dim=1)
    x = torch.nn.functional.normalize(torch.from_numpy(index).to(device), dim=1)
    nearest = []
    for start in range(0, nq, 256):  # 256 x index similarities at a time (~1.4 GB for the full 1.4M index)
        sims = q[start : start + 256] @ x.T
        ids = torch.from_numpy(self_ids[start : start + 256]).to(device)
        rows = torch.nonzero(ids >= 0).flatten()
        sims[rows, ids[rows]] = -torch.inf
        nearest.append(torch.argmax(sims, dim=1).cpu().numpy())  # first maximum: lowest index position wins ties
    nn = np.concatenate(nearest) if nearest else np.zeros(0, dtype=np.int64)
    hit = np.array([q_dom[k] == i_dom[j] and bool(set(q_ds.label_sets[k]) & set(i_ds.label_sets[j]))
                    for k, j in enumerate(nn)], dtype=bool)
    out = {f"R@1_{name}": float(hit[q_dom == d].mean() * 100.0)
           for d, name in enumerate(q_ds.info.extra["domains"]) if (q_dom == d).any()}
    out["R@1"] = float(np.mean(list(out.values()))) if out else float("nan")
    out["R@1_pooled"] = float(hit.mean() * 100.0) if nq else float("nan")
    return out


_ = ClassVar  # keep the import for type checkers of subclasses
