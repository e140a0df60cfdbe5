"""Nearest-neighbour probes on frozen global features: DINOv2 weighted kNN and UnED retrieval R@1.

References: DINOv2 ``dinov2/eval/knn.py`` (cosine top-k, votes softmax(sim/T), T = 0.07, k ∈ {10, 20, 100,
200}); UnED ``universal_embedding/knn_utils.py`` (R@1 of the nearest index item, self-match dropped when the
query set is the index).

Determinism: neighbours are ranked by similarity, ties broken by the lower train/index position (also at
the top-k boundary), and class-vote ties go to the lower class index, so results do not depend on how
``torch.topk`` orders equal values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["knn_predict", "knn_retrieval_recall_at_1"]

ArrayLike = np.ndarray | torch.Tensor


def _to_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype)


def _pick_device(x: ArrayLike, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _stable_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns per row, ordered by value descending then column ascending (ties at the boundary too)."""
    vals, idx = torch.topk(sims, k, dim=1)
    kth = vals[:, -1:]
    straddling = (sims >= kth).sum(dim=1) > k  # equal values cross the top-k boundary: pick lowest columns
    for r in torch.nonzero(straddling).flatten().tolist():
        idx[r] = torch.sort(sims[r], descending=True, stable=True).indices[:k]
    idx, _ = torch.sort(idx, dim=1)  # column order first, then a stable sort by value keeps it among ties
    vals = sims.gather(1, idx)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


@torch.no_grad()
def knn_predict(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[int, np.ndarray]:
    """DINOv2 weighted kNN: predicted class (int64 numpy, one per test row) for each k in ``ks``.

    Features are L2-normalised, similarities are cosine; the top-k train neighbours vote for their class with
    weight exp(sim / T) (DINOv2 normalises these with a softmax over the top-max(ks) neighbours, which scales
    every vote of a query alike and so gives the same argmax). A k above the number of train samples is
    clamped to it (the result key stays the requested k). Test queries are processed ``batch_size`` at a time,
    so memory is O(batch_size · n_train). Runs on ``device`` (default: train_feats' device, or CPU).
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    dev = _pick_device(train_feats, device)
    train = F.normalize(_to_tensor(train_feats, dev, torch.float32), dim=1)
    test = F.normalize(_to_tensor(test_feats, dev, torch.float32), dim=1)
    labels = _to_tensor(train_labels, dev, torch.int64).flatten()
    n_train = train.shape[0]
    if labels.numel() != n_train or n_train == 0:
        raise ValueError(f"need one label per train row and n_train > 0, got {labels.numel()} for {n_train}")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"feature dims differ: train {train.shape[1]}, test {test.shape[1]}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes})")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    k_max = min(max(ks), n_train)

    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, test.shape[0], batch_size):
        sims = test[start : start + batch_size] @ train.T
        top_sims, top_idx = _stable_topk(sims, k_max)
        weights = torch.softmax(top_sims.double() / temperature, dim=1)
        top_labels = labels[top_idx]
        for k in ks:
            kk = min(k, n_train)
            votes = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64, device=dev)
            votes.scatter_add_(1, top_labels[:, :kk], weights[:, :kk])
            preds[k].append(torch.argmax(votes, dim=1))  # first maximum: lowest class index wins ties
    empty = torch.empty(0, dtype=torch.int64)
    return {k: (torch.cat(v) if v else empty).cpu().numpy() for k, v in preds.items()}


@torch.no_grad()
def knn_retrieval_recall_at_1(
    query: ArrayLike,
    query_labels: ArrayLike,
    index: ArrayLike,
    index_labels: ArrayLike,
    exclude_self_ids: ArrayLike | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> float:
    """UnED-style R@1 in percent: % of queries whose nearest index item (cosine) has the same label.

    Labels are (n,) or (n, m); with (n, m) every column must match (e.g. (class, domain) for UnED's merged
    index). ``exclude_self_ids[i]`` is the index position of query i itself (-1 when it is not in the index);
    that item is skipped, as UnED's ``throw_1st`` does when query and index are the same split (pass
    ``np.arange(n)`` then). Ties: the lower index position wins.
    """
    dev = _pick_device(index, device)
    q = F.normalize(_to_tensor(query, dev, torch.float32), dim=1)
    x = F.normalize(_to_tensor(index, dev, torch.float32), dim=1)
    ql = _to_tensor(query_labels, dev, torch.int64)
    xl = _to_tensor(index_labels, dev, torch.int64)
    ql = ql[:, None] if ql.ndim == 1 else ql
    xl = xl[:, None] if xl.ndim == 1 else xl
    if ql.shape[0] != q.shape[0] or xl.shape[0] != x.shape[0] or ql.shape[1] != xl.shape[1]:
        raise ValueError("labels must have one row per query / index item and the same number of columns")
    if q.shape[0] == 0:
        return float("nan")
    self_ids = None
    if exclude_self_ids is not None:
        self_ids = _to_tensor(exclude_self_ids, dev, torch.int64).flatten()
        if self_ids.numel() != q.shape[0]:
            raise ValueError("exclude_self_ids needs one entry per query")
    if x.shape[0] - (0 if self_ids is None else 1) < 1:
        raise ValueError("the index has no candidate left for a query")

    hits = 0
    for start in range(0, q.shape[0], batch_size):
        sims = q[start : start + batch_size] @ x.T
        if self_ids is not None:
            ids = self_ids[start : start + batch_size]
            rows = torch.nonzero(ids >= 0).flatten()
            sims[rows, ids[rows]] = -torch.inf
        nearest = torch.argmax(sims, dim=1)  # first maximum: lowest index position wins ties
        hits += int((xl[nearest] == ql[start : start + batch_size]).all(dim=1).sum())
    return hits / q.shape[0] * 100.0
