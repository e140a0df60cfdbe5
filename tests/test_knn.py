"""Checks of the DINOv2-style weighted kNN classifier and the UnED retrieval R@1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tips_bench.metrics import top_k_accuracy
from tips_bench.probes.knn import knn_chunk_rows, knn_predict, knn_predict_stream, knn_retrieval_recall_at_1

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


# ------------------------------------------------------------------ streamed kNN (bounded memory)


def _reference_knn(train: np.ndarray, labels: np.ndarray, test: np.ndarray, num_classes: int, ks, temperature):
    """Brute force in float64: rank by (similarity desc, train index asc), softmax votes, lowest class on ties."""
    t = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = q @ t.T
    k_max = min(max(ks), len(t))
    out = {k: [] for k in ks}
    for row in sims:
        top = np.lexsort((np.arange(len(row)), -row))[:k_max]
        w = np.exp((row[top] - row[top].max()) / temperature)
        w /= w.sum()
        for k in ks:
            votes = np.zeros(num_classes)
            for j in range(min(k, k_max)):
                votes[labels[top[j]]] += w[j]
            out[k].append(int(np.argmax(votes)))
    return {k: np.array(v) for k, v in out.items()}


def _tied_data(seed: int, n_train: int = 90, n_test: int = 21):
    """Vectors of ±0.5 entries (unit norm) scaled by powers of two: every similarity is exact, many tie."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    signs = (rng.choice([-0.5, 0.5], size=(n, 4)) * rng.choice([0.25, 1.0, 4.0], size=(n, 1))).astype(np.float32)
    return signs[:n_train], rng.integers(0, 5, size=n_train), signs[n_train:]


def _pieces(x: np.ndarray, y: np.ndarray, size: int):
    return lambda: ((x[s : s + size], y[s : s + size]) for s in range(0, len(x), size))


@pytest.mark.parametrize(("seed", "ks"), [(0, (1, 3, 10, 200)), (1, (1, 3, 10)), (2, (2, 5))])
def test_streamed_knn_equals_in_memory_and_brute_force_with_exact_ties(seed, ks) -> None:
    """Also with a k_max below the train size, where a full running list prunes the later tiles."""
    train, labels, test = _tied_data(seed)
    want = _reference_knn(train.astype(np.float64), labels, test.astype(np.float64), 5, ks, 0.07)
    in_memory = knn_predict(train, labels, test, 5, ks=ks)
    # train blocks of 13 rows re-cut into tiles of 7; queries in chunks of 8 (two tiles of 4) -> 3 passes
    streamed = knn_predict_stream(_pieces(train, labels, 13), (test[s : s + 5] for s in range(0, len(test), 5)), 5,
                                  ks=ks, chunk_rows=8, query_tile=4, train_tile=7)
    for k in ks:
        np.testing.assert_array_equal(in_memory[k], want[k])
        np.testing.assert_array_equal(streamed[k], want[k])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_knn_gives_the_reference_predictions_on_every_available_device(device) -> None:
    train, labels, test = _tied_data(3)
    ks = (1, 3, 10)
    want = _reference_knn(train.astype(np.float64), labels, test.astype(np.float64), 5, ks, 0.07)
    got = knn_predict_stream(_pieces(train, labels, 13), [test], 5, ks=ks, chunk_rows=8, query_tile=4, train_tile=7,
                             device=device)
    for k in ks:
        np.testing.assert_array_equal(got[k], want[k])


def test_streamed_knn_equals_in_memory_on_random_features_for_any_memory_budget() -> None:
    rng = np.random.default_rng(5)
    train = rng.normal(size=(400, 24)).astype(np.float32)
    labels = rng.integers(0, 9, size=400)
    test = rng.normal(size=(70, 24)).astype(np.float32)
    ks = (10, 20, 100, 200)
    want = knn_predict(train, labels, test, 9, ks=ks, batch_size=16)
    for chunk in (16, 64):  # 5 and 2 passes over the train stream
        got = knn_predict_stream(_pieces(train, labels, 50), [test], 9, ks=ks, chunk_rows=chunk, query_tile=16,
                                 train_tile=64)
        for k in ks:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"chunk {chunk}, k {k}")


def test_knn_chunk_rows_follows_the_memory_budget() -> None:
    small = knn_chunk_rows(128, dim=1024, k_max=200, num_classes=1000)
    large = knn_chunk_rows(1024, dim=1024, k_max=200, num_classes=1000)
    assert small % 256 == 0 and large % 256 == 0 and 256 <= small < large
    # per query: features as read, regrouped, normalised (12 KiB) and its top-200 (4 KB): 1 GiB holds > 50k queries
    assert large >= 50_000
    with pytest.raises(ValueError, match="memory_mb=1 is too small"):
        knn_chunk_rows(1, dim=1024, k_max=200, num_classes=1000)


def test_streamed_knn_rejects_bad_input() -> None:
    train, labels, test = _tied_data(0)
    with pytest.raises(ValueError, match="multiple of the query tile"):
        knn_predict_stream(_pieces(train, labels, 10), [test], 5, chunk_rows=10, query_tile=4)
    with pytest.raises(ValueError, match="train set is empty"):
        knn_predict_stream(lambda: [], [test], 5)
    with pytest.raises(ValueError, match="labels must lie"):
        knn_predict_stream(_pieces(train, labels, 10), [test], 3)
    assert knn_predict_stream(_pieces(train, labels, 10), [], 5, ks=(1,))[1].shape == (0,)


def test_knn_task_streams_the_cache_in_chunks_with_the_same_predictions(tmp_path, monkeypatch) -> None:
    """toy_knn through the runner: many passes over small train tiles, predictions equal to the in-memory kNN."""
    import tips_bench.probes.knn as knn_module
    import tips_bench.tasks.classification as classification
    from tips_bench.cache import FeatureCache
    from tips_bench.runner import Runner, RunOptions

    checked = []

    def stream_and_compare(train_blocks, queries, num_classes, **kw):
        queries = list(queries)
        got = knn_predict_stream(train_blocks, queries, num_classes, **kw)
        x, y = (np.concatenate(a) for a in zip(*train_blocks(), strict=True))
        want = knn_predict(x, y, np.concatenate(queries), num_classes, ks=kw["ks"], temperature=kw["temperature"])
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        checked.append(len(x))
        return got

    monkeypatch.setattr(classification, "knn_predict_stream", stream_and_compare)
    runner = Runner(cache=FeatureCache(tmp_path / "cache"))
    opts = RunOptions(limit=40, progress=False, overrides={"resolution": 56})
    whole = runner.run("pixels", "toy_knn", opts)
    monkeypatch.setattr(knn_module, "QUERY_TILE", 4)
    monkeypatch.setattr(knn_module, "TRAIN_TILE", 6)
    monkeypatch.setattr(classification, "knn_chunk_rows", lambda *a, **k: 8)  # 5 passes over the train stream
    chunked = runner.run("pixels", "toy_knn", opts)
    assert checked == [40, 40]
    assert {r.metric: r.value for r in chunked} == {r.metric: r.value for r in whole}
    assert chunked[0].protocol["timings"]["knn_passes"] == 5 and whole[0].protocol["timings"]["knn_passes"] == 1


def test_knn_task_rejects_a_bad_memory_budget_in_one_sentence(tmp_path, capsys) -> None:
    from tips_bench.cli import main

    base = ["run", "--backbone", "pixels", "--task", "toy_knn", "--limit", "8", "--no-progress", "--cache-dir",
            str(tmp_path / "cache"), "--results", str(tmp_path / "runs.jsonl"), "--set", "resolution=56"]
    for value, what in (("0", "'memory_mb' has value 0"), ("0.5", "memory_mb=0.5 is too small"),
                        ("lots", "'memory_mb' has value 'lots'")):
        assert main([*base, "--set", f"memory_mb={value}"]) == 2
        err = capsys.readouterr().err.strip()
        assert what in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "runs.jsonl").exists()
