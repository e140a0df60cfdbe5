"""Image-level tasks on global embeddings: kNN classification, linear classification, kNN retrieval."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from tips_bench.errors import TipsBenchError
from tips_bench.probes.knn import TRAIN_TILE, knn_chunk_rows, knn_predict_stream, knn_retrieval_recall_at_1
from tips_bench.probes.linear import LinearProbeConfig, train_linear_grid
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, num_classes

#: Working memory of the streamed kNN when the protocol sets no ``memory_mb``.
DEFAULT_KNN_MEMORY_MB = 512


def _globals_and_labels(ctx: EvalContext, role: str) -> tuple[np.ndarray, np.ndarray]:
    entry = ctx.entries[role]
    return entry.read(global_key(ctx), dtype=np.float32), entry.read("label").astype(np.int64)


class _GlobalTask(Task):
    """Tasks on global embeddings and image labels only."""

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=("label",))


@register_task_type
class KnnTask(_GlobalTask):
    """DINOv2 weighted kNN on L2-normalised global embeddings (k in {10, 20, 100, 200}, T = 0.07).

    Streamed from the cache: the eval queries a chunk at a time (as many as the protocol's ``memory_mb`` allows),
    the train features shard by shard once per chunk, with a running top-k per query, so memory does not grow
    with the number of train images.
    """

    type_name = "knn"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        ks = tuple(int(k) for k in self.d.p("ks", [10, 20, 100, 200]))
        temperature = float(self.d.p("temperature", 0.07))
        headline_k = int(self.d.p("headline_k", 20))
        memory_mb = self.d.p("memory_mb", DEFAULT_KNN_MEMORY_MB)
        if not ks or min(ks) < 1 or temperature <= 0 or headline_k not in ks:
            raise TipsBenchError(f"task {self.d.name}: ks must be integers >= 1, temperature > 0 and headline_k one "
                                 f"of ks (got ks={list(ks)}, temperature={temperature}, headline_k={headline_k})")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int | float) or not memory_mb > 0:
            raise TipsBenchError(f"task {self.d.name}: memory_mb must be a positive number of MiB, got {memory_mb!r}")
        train, test = ctx.entries["train"], ctx.entries["eval"]
        key, classes = global_key(ctx), num_classes(ctx)
        try:
            chunk = knn_chunk_rows(float(memory_mb), test.item_shape(key)[0], max(ks), classes)
        except ValueError as exc:
            raise TipsBenchError(f"task {self.d.name}: {exc} (--set memory_mb=...)") from exc
        test_y = test.read("label").astype(np.int64)

        def train_blocks():
            return ((b[key], b["label"]) for b in train.iter_batches([key, "label"], TRAIN_TILE))

        passes = -(-test.num_items // chunk)
        t0 = time.perf_counter()
        preds = knn_predict_stream(train_blocks, (b[key] for b in test.iter_batches([key], chunk)), classes, ks=ks,
                                   temperature=temperature, chunk_rows=chunk, device=ctx.device,
                                   progress=ctx.progress, progress_total=passes * train.num_items, desc=self.d.name)
        ctx.timings |= {"knn_s": round(time.perf_counter() - t0, 3), "knn_passes": passes}
        out = {f"top1@k{k}": float((preds[k] == test_y).mean() * 100.0) for k in ks}
        out["top1"] = out[f"top1@k{headline_k}"]
        return {m: v for m, v in out.items() if m in self.d.metrics}


@register_task_type
class LinearClassificationTask(_GlobalTask):
    """Linear classifiers (softmax regression) on frozen global embeddings, one per learning rate of a grid.

    DINOv2's linear evaluation on cached embeddings (:mod:`tips_bench.probes.linear`): the heads train in one
    streamed pass per epoch, the best is picked on a held-out fraction of train and reported on the eval split.
    The chosen learning rate and its held-out top-1 are recorded in the row's ``protocol.timings``.
    """

    type_name = "linear_classification"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        cfg = linear_config(self.d.name, self.d.p("probe", {}) or {}, self.d.p("standardize", True))
        key = global_key(ctx)
        try:
            result = train_linear_grid(ctx.entries["train"], key, num_classes(ctx), cfg, seed=ctx.seed,
                                       device=ctx.device, progress=ctx.progress, desc=self.d.name)
        except ValueError as exc:  # e.g. too few train rows for the held-out part
            raise TipsBenchError(f"task {self.d.name}: {exc}") from exc
        t0 = time.perf_counter()
        acc = result.evaluate(ctx.entries["eval"], key, ctx.device)
        ctx.timings |= {"probe_train_s": round(result.train_seconds, 3),
                        "probe_eval_s": round(time.perf_counter() - t0, 3),
                        "chosen_lr": result.chosen_lr, "n_heldout": result.n_heldout}
        if result.heldout_top1:
            ctx.timings["heldout_top1"] = result.heldout_top1[result.chosen]
            ctx.timings |= {f"heldout_top1@lr{lr:g}": v for lr, v in zip(result.lrs, result.heldout_top1, strict=True)}
        return {m: v for m, v in acc.items() if m in self.d.metrics}


def linear_config(task: str, probe: dict, standardize: object = True) -> LinearProbeConfig:
    """The ``probe:`` mapping (and top-level ``standardize``) of a linear_classification task as a config.

    ``lr_grid`` (default: ``[lr]``) lists the heads' learning rates; with ``lr_reference_batch`` R each is
    multiplied by batch_size / R (DINOv2: R = 256). Bad values raise TipsBenchError naming the key.
    """
    if not isinstance(standardize, bool):
        raise TipsBenchError(f"task {task}: protocol key standardize must be true or false, got {standardize!r}")
    try:
        bs = int(probe.get("batch_size", 256))
        grid = probe.get("lr_grid") or [probe.get("lr", 1e-3)]
        ref = probe.get("lr_reference_batch")
        scale = bs / float(ref) if ref else 1.0
        return LinearProbeConfig(
            lrs=tuple(float(lr) * scale for lr in grid), epochs=int(probe.get("epochs", 100)), batch_size=bs,
            weight_decay=float(probe.get("weight_decay", 1e-4)), optimizer=str(probe.get("optimizer", "adamw")),
            lr_schedule=str(probe.get("lr_schedule", "cosine")), warmup_epochs=float(probe.get("warmup_epochs", 0)),
            init=str(probe.get("init", "torch")), standardize=standardize,
            val_fraction=float(probe.get("val_fraction", 0.0)), val_seed=int(probe.get("val_seed", 0)),
            shuffle_block=int(probe.get("shuffle_block", 32)), shuffle_window=int(probe.get("shuffle_window", 65536)))
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise TipsBenchError(f"task {task}: bad probe settings: {exc}; see docs/tasks.md (linear_classification)"
                             ) from exc


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
