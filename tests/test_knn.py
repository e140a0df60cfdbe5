"""Checks of the DINOv2-style weighted kNN classifier and the UnED retrieval R@1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tips_bench.metrics import top_k_accuracy
from tips_bench.probes.knn import knn_predict, knn_retrieval_recall_at_1

S = math.sqrt(1 - 0.9**2)  # sin of the angle whose cosine is 0.9


def _three_points() -> tuple[np.ndarray, np.ndarray]:
    # a (class 0) at cos 1 from the query (scaled by 5: normalisation must remove it),
    # b and c (class 1) at cos 0.9 from the query.
    feats = np.array([[5.0, 0.0], [0.9, S], [0.9, -S]], dtype=np.float32)
    return feats, np.array([0, 1, 1])


def test_hand_computed_weighted_vote() -> None:
    train, labels = _three_points()
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    # T = 0.07: weight(a) = e^(1/0.07) = e^14.286, weight(b) + weight(c) = 2·e^(0.9/0.07) = 2·e^12.857;
    #   ratio = e^1.4286 / 2 = 4.17 / 2 > 1 -> class 0 wins with k = 3 (a plain majority vote would say 1).
    out = knn_predict(train, labels, query, num_classes=2, ks=(1, 3), temperature=0.07)
    assert out[1].tolist() == [0] and out[3].tolist() == [0]
    # T = 1: weight(a) = e^1 = 2.718 < 2·e^0.9 = 4.919 -> class 1 wins with k = 3; k = 1 still says 0.
    out = knn_predict(train, labels, query, num_classes=2, ks=(1, 3), temperature=1.0)
    assert out[1].tolist() == [0] and out[3].tolist() == [1]


def test_k_larger_than_train_set_is_clamped() -> None:
    train, labels = _three_points()
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    out = knn_predict(train, labels, query, num_classes=2, ks=(3, 200), temperature=1.0)
    assert set(out) == {3, 200}
    assert out[200].tolist() == out[3].tolist() == [1]


def test_separated_clusters_give_100_percent() -> None:
    rng = np.random.default_rng(0)
    centers = np.linalg.qr(rng.normal(size=(32, 4)))[0].T * 10  # 4 orthogonal directions
    train_labels = np.repeat(np.arange(4), 25)
    test_labels = np.repeat(np.arange(4), 10)
    train = centers[train_labels] + rng.normal(size=(100, 32))
    test = centers[test_labels] + rng.normal(size=(40, 32))
    out = knn_predict(train, train_labels, test, num_classes=4, ks=(1, 10, 20), batch_size=7)
    for k, pred in out.items():
        assert pred.dtype == np.int64 and pred.shape == (40,)
        one_hot = np.eye(4)[pred]
        assert top_k_accuracy(one_hot, test_labels, k=1)["top1"] == 100.0, k


def test_chunking_torch_input_and_determinism() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=60)
    test = rng.normal(size=(23, 8)).astype(np.float32)
    a = knn_predict(train, labels, test, 5, ks=(1, 5, 20), batch_size=1)
    b = knn_predict(
        torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), 5, ks=(1, 5, 20)
    )
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ties_go_to_the_lower_train_index_and_lower_class() -> None:
    same = np.ones((4, 3), dtype=np.float32)  # four identical train points: every similarity ties
    query = np.ones((1, 3), dtype=np.float32)
    # k = 1: neighbour = train index 0 -> its class (1), not whichever topk happens to return
    assert knn_predict(same, np.array([1, 0, 0, 0]), query, 2, ks=(1,))[1].tolist() == [1]
    # k = 2 across the top-k boundary: indices 0, 1 (classes 1, 1) are taken, not 2, 3 (classes 0, 0)
    assert knn_predict(same, np.array([1, 1, 0, 0]), query, 2, ks=(2,))[2].tolist() == [1]
    # k = 2 with equal votes for classes 2 and 0 -> the lower class index (0) wins
    assert knn_predict(same, np.array([2, 0, 1, 1]), query, 3, ks=(2,))[2].tolist() == [0]


def test_knn_rejects_bad_input() -> None:
    train, labels = _three_points()
    with pytest.raises(ValueError):
        knn_predict(train, labels, train, num_classes=1)
    with pytest.raises(ValueError):
        knn_predict(train, labels[:2], train, num_classes=2)
    with pytest.raises(ValueError):
        knn_predict(train, labels, train, num_classes=2, ks=(0,))


def test_retrieval_r1_by_hand_with_self_exclusion() -> None:
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    # Without exclusion every item finds itself: 100 %.
    assert knn_retrieval_recall_at_1(feats, labels, feats, labels) == 100.0
    # Excluding self: item 0 -> item 1 (label 0, hit); item 1 -> item 0 (hit);
    # item 2 -> item 1 (cos 0.11 > cos 0 with item 0; label 0 != 1, miss) -> 2/3.
    r1 = knn_retrieval_recall_at_1(feats, labels, feats, labels, exclude_self_ids=np.arange(3))
    assert r1 == pytest.approx(200 / 3)
    # -1 = the query is not in the index: nothing is excluded for it (query 2 finds itself again).
    r1 = knn_retrieval_recall_at_1(feats, labels, feats, labels, exclude_self_ids=np.array([0, 1, -1]))
    assert r1 == pytest.approx(100.0)


def test_retrieval_r1_needs_every_label_column_to_match() -> None:
    index = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    index_labels = np.array([[3, 0], [3, 1]])  # (class, domain)
    query = np.array([[1.0, 0.1], [0.1, 1.0]], dtype=np.float32)
    # query 0 -> index 0 = (3, 0): hit for (3, 0); query 1 -> index 1 = (3, 1): miss for (3, 0)
    assert knn_retrieval_recall_at_1(query, np.array([[3, 0], [3, 0]]), index, index_labels) == 50.0
    # with 1-D class labels only, both are hits
    assert knn_retrieval_recall_at_1(query, np.array([3, 3]), index, np.array([3, 3])) == 100.0


def test_retrieval_r1_ties_go_to_the_lower_index() -> None:
    index = np.ones((3, 2), dtype=np.float32)
    query = np.ones((1, 2), dtype=np.float32)
    assert knn_retrieval_recall_at_1(query, np.array([7]), index, np.array([7, 0, 0]), batch_size=1) == 100.0
    assert knn_retrieval_recall_at_1(query, np.array([7]), index, np.array([0, 7, 7])) == 0.0
