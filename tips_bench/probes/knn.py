"""Nearest-neighbour probes on frozen global features: DINOv2 weighted kNN and UnED retrieval R@1.

References: DINOv2 ``dinov2/eval/knn.py`` (cosine top-k, votes softmax(sim/T), T = 0.07, k ∈ {10, 20, 100,
200}); UnED ``universal_embedding/knn_utils.py`` (R@1 of the nearest index item, self-match dropped when the
query set is the index).

Determinism: neighbours are ranked by similarity, ties broken by the lower train/index position (also at
the top-k boundary), and class-vote ties go to the lower class index, so results do not depend on how
``torch.topk`` orders equal values.

Bounded memory (:func:`knn_predict_stream`): the train set arrives as a stream of blocks (e.g. cache shards);
queries are taken a chunk at a time, and for each chunk the train stream is read once, block by block, while a
running top-k per query is merged with each block's top-k (chunked top-k). Memory is O(chunk · (dim + k)) plus
one block, whatever the number of train rows; :func:`knn_chunk_rows` sizes the chunk from a memory budget.
Similarities are always computed in fixed tiles (``QUERY_TILE`` queries x ``TRAIN_TILE`` train rows, aligned to
absolute positions), because a float32 matrix product may round differently for differently shaped operands:
with fixed tiles the predictions do not depend on the memory budget, and the in-memory :func:`knn_predict` (the
same code with one chunk) gives the same predictions as the streamed run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tips_bench.probes.stream import concat_rows, rechunk

__all__ = ["QUERY_TILE", "TRAIN_TILE", "knn_chunk_rows", "knn_predict", "knn_predict_stream",
           "knn_retrieval_recall_at_1"]

ArrayLike = np.ndarray | torch.Tensor

#: Queries per similarity product (the former default query batch of :func:`knn_predict`).
QUERY_TILE = 256
#: Train rows per similarity product.
TRAIN_TILE = 4096


def _to_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype)


def _pick_device(x: ArrayLike, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _stable_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns per row, ordered by value descending then column ascending (ties at the boundary too)."""
    n = sims.shape[1]
    vals, idx = torch.topk(sims, min(k + 1, n), dim=1)
    if n > k:  # equal values cross the top-k boundary when the (k+1)-th value equals the k-th: pick lowest columns
        for r in torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten().tolist():
            idx[r, :k] = torch.sort(sims[r], descending=True, stable=True).indices[:k]
    idx, _ = torch.sort(idx[:, :k], dim=1)  # column order first, then a stable sort by value keeps it among ties
    vals = sims.gather(1, idx)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def _merge_topk(run: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...], k: int) -> tuple[torch.Tensor, ...]:
    """Merge two (sims, train index, label) candidate lists, each ordered by (sim desc, index asc), into the top k.

    Every index of ``run`` is below every index of ``new`` (blocks arrive in train order), so a stable sort by
    similarity of the concatenation keeps the lower index first among equal similarities.
    """
    vals = torch.cat([run[0], new[0]], dim=1)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    order = order[:, :k]
    rest = (torch.cat([r, n], dim=1).gather(1, order) for r, n in zip(run[1:], new[1:], strict=True))
    return (vals[:, :k], *rest)


def knn_chunk_rows(memory_mb: float, dim: int, k_max: int, num_classes: int, query_tile: int | None = None,
                   train_tile: int | None = None) -> int:
    """Queries per pass over the train set so that the kNN's working arrays fit in ``memory_mb`` MiB.

    Counted: one train block (as read, concatenated and normalised, float32), one tile's similarities and
    top-k temporaries, its class votes, and per query its features (as read, regrouped and normalised, float32)
    and its running top-k (similarity, index, label). Not counted: the interpreter, libraries and the
    memory-mapped cache shard being read. The result is a multiple of the query tile; ValueError when not even
    one tile fits.
    """
    qt, tt = query_tile or QUERY_TILE, train_tile or TRAIN_TILE
    fixed = 3 * 4 * tt * dim + qt * tt * (4 + 4 + 8) + qt * 2 * k_max * (4 + 8 + 8) * 2 + 2 * 8 * qt * num_classes
    per_query = 3 * 4 * dim + k_max * (4 + 8 + 8)
    budget = int(memory_mb * 2**20) - fixed
    rows = budget // per_query // qt * qt
    if rows < qt:
        need = (fixed + qt * per_query) / 2**20
        raise ValueError(f"memory_mb={memory_mb:g} is too small for {dim}-dim features and k={k_max}: "
                         f"use at least {int(need) + 1}")
    return rows


@torch.no_grad()
def knn_predict_stream(
    train_blocks: Callable[[], Iterable[tuple[ArrayLike, ArrayLike]]],
    queries: Iterable[ArrayLike],
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    chunk_rows: int | None = None,
    query_tile: int | None = None,
    train_tile: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    progress_total: int | None = None,
    desc: str = "knn",
) -> dict[int, np.ndarray]:
    """DINOv2 weighted kNN with bounded memory: predicted class per query (int64 numpy) for each k in ``ks``.

    ``train_blocks()`` returns a fresh iterable of (features, labels) blocks in train order (e.g. cache shards
    via ``CacheEntry.iter_batches``); it is called once per query chunk. ``queries`` yields query feature blocks
    in order; they are regrouped into chunks of ``chunk_rows`` (default: all queries in one chunk), each
    compared with the whole train stream while a running top-max(ks) per query is merged with every train tile's
    top-k. Features are L2-normalised, similarities cosine; the top-k neighbours vote for their class with weight
    exp(sim / T) (DINOv2 normalises with a softmax over the top-max(ks), which scales every vote of a query alike
    and so gives the same argmax). A k above the number of train rows is clamped to it (the result key stays the
    requested k). ``progress_total`` (train rows x passes) sizes the progress bar.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    qt, tt = query_tile or QUERY_TILE, train_tile or TRAIN_TILE
    if chunk_rows is not None and (chunk_rows < 1 or chunk_rows % qt):
        raise ValueError(f"chunk_rows must be a positive multiple of the query tile ({qt}), got {chunk_rows}")
    dev = torch.device(device) if device is not None else None
    k_max = max(ks)
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    bar = tqdm(total=progress_total, desc=desc, unit="row", leave=False, disable=not progress)
    query_stream = ((q,) for q in queries)
    chunks = rechunk(query_stream, chunk_rows) if chunk_rows else _all_at_once(query_stream)
    try:
        for (chunk,) in chunks:
            if len(chunk) == 0:
                continue
            d = dev or _pick_device(chunk, None)
            q = F.normalize(_to_tensor(chunk, d, torch.float32), dim=1)
            tiles = [slice(s, min(s + qt, q.shape[0])) for s in range(0, q.shape[0], qt)]
            run: list[tuple[torch.Tensor, ...] | None] = [None] * len(tiles)
            seen = 0
            for feats, labels in rechunk(train_blocks(), tt):
                x = F.normalize(_to_tensor(feats, d, torch.float32), dim=1)
                y = _to_tensor(labels, d, torch.int64).flatten()
                _check_block(x, y, q.shape[1], num_classes)
                for ti, sl in enumerate(tiles):
                    sims = q[sl] @ x.T
                    k_new, top = min(k_max, x.shape[0]), run[ti]
                    if top is not None and top[0].shape[1] == k_max:
                        # a full running list: only similarities above its last one can enter (an equal one
                        # has a higher train index and ranks after it), so take at most that many per row
                        k_new = min(k_new, int(torch.count_nonzero(sims > top[0][:, -1:], dim=1).max()))
                        if k_new == 0:
                            continue
                    vals, idx = _stable_topk(sims, k_new)
                    new = (vals, idx + seen, y[idx])
                    run[ti] = new if top is None else _merge_topk(top, new, k_max)
                seen += x.shape[0]
                bar.update(x.shape[0])
            if seen == 0:
                raise ValueError("the train set is empty: need n_train > 0")
            for top in run:
                assert top is not None
                _vote(top, ks, temperature, num_classes, seen, preds)
    finally:
        bar.close()
    empty = torch.empty(0, dtype=torch.int64)
    return {k: (torch.cat(v).cpu() if v else empty).numpy() for k, v in preds.items()}


def _check_block(x: torch.Tensor, y: torch.Tensor, dim: int, num_classes: int) -> None:
    if y.numel() != x.shape[0]:
        raise ValueError(f"need one label per train row, got {y.numel()} for {x.shape[0]}")
    if x.shape[1] != dim:
        raise ValueError(f"feature dims differ: train {x.shape[1]}, test {dim}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"train labels must lie in [0, {num_classes})")


def _vote(top: tuple[torch.Tensor, ...], ks: tuple[int, ...], temperature: float, num_classes: int, n_train: int,
          preds: dict[int, list[torch.Tensor]]) -> None:
    """Weighted class votes of one tile's top neighbours for every k; lowest class index wins ties."""
    top_sims, _, top_labels = top
    weights = torch.softmax(top_sims.double() / temperature, dim=1)
    for k in ks:
        kk = min(k, n_train)
        votes = torch.zeros(top_sims.shape[0], num_classes, dtype=torch.float64, device=top_sims.device)
        votes.scatter_add_(1, top_labels[:, :kk], weights[:, :kk])
        preds[k].append(torch.argmax(votes, dim=1))  # first maximum: lowest class index wins ties


def _all_at_once(parts: Iterable[tuple[ArrayLike, ...]]) -> Iterator[tuple[ArrayLike, ...]]:
    held = list(parts)
    if held:
        yield concat_rows(held)


def knn_predict(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[int, np.ndarray]:
    """DINOv2 weighted kNN on in-memory features: predicted class (int64 numpy, one per test row) for each k.

    The same computation as :func:`knn_predict_stream` with every query in one chunk and the train set as one
    block (so the same predictions); ``batch_size`` is the query tile (default ``QUERY_TILE``). Memory is
    O(n_test · dim + tile · ``TRAIN_TILE``) beside the inputs. Runs on ``device`` (default: train_feats'
    device, or CPU).
    """
    dev = _pick_device(train_feats, device)
    n_train = len(train_feats)
    if len(train_labels) != n_train or n_train == 0:
        raise ValueError(f"need one label per train row and n_train > 0, got {len(train_labels)} for {n_train}")
    return knn_predict_stream(lambda: [(train_feats, train_labels)], [test_feats], num_classes, ks=ks,
                              temperature=temperature, query_tile=batch_size, device=dev)


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
