"""ResultRow serialisation, provenance, config hashing and the concurrent append-only store."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import sys
import types
import warnings
from pathlib import Path

import pytest

import tips_bench
from tips_bench import results
from tips_bench.results import ResultRow, ResultsStore, capture_provenance, config_hash, latest


def make_row(**overrides) -> ResultRow:
    base = dict(
        run_id="run-1", timestamp="2025-01-02T03:04:05.000006+00:00", backbone="tips_g14",
        backbone_family="tips", task="voc_seg", task_version=2, dataset="voc2012", split="val", metric="mIoU",
        value=83.25, higher_is_better=True, seed=7,
        protocol={"resolution": 448, "layers": [9, 19], "cls": "cls1", "crop": None},
        config_hash="0123456789abcdef", checkpoint_hash="feedbeef", code_version="0.1.0+gabc1234.dirty",
        packages={"numpy": "2.0.0", "torch": "2.6.0"}, device="CUDA NVIDIA H100", wall_time_s=12.5,
        images_per_s=80.25, peak_memory_mb=1024.5, num_samples=1449, limit=None,
    )
    base.update(overrides)
    return ResultRow(**base)


# ---------------------------------------------------------------- rows


def test_round_trip_every_field() -> None:
    row = make_row(limit=32, protocol={"nested": {"b": [1, 2.5], "a": "x"}, "unicode": "Δ"})
    line = row.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert set(data) == {f.name for f in dataclasses.fields(ResultRow)}
    assert isinstance(data["protocol"], dict) and isinstance(data["packages"], dict)
    back = ResultRow.from_json(line)
    assert back == row
    for f in dataclasses.fields(ResultRow):
        assert type(getattr(back, f.name)) is type(getattr(row, f.name)), f.name


def test_round_trip_random_init_and_no_limit() -> None:
    row = make_row(checkpoint_hash="", limit=None, value=0.0)
    assert ResultRow.from_json(row.to_json()) == row


def test_from_json_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="lacks fields"):
        ResultRow.from_json('{"run_id": "x"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        ResultRow.from_json('{"run_id": "x", "time')
    data = make_row().to_dict() | {"value": "83.1"}
    with pytest.raises(ValueError, match="value"):
        ResultRow.from_dict(data)


def test_config_hash_is_stable_and_order_independent() -> None:
    a = {"resolution": 448, "probe": {"lr": 1e-3, "iters": 40000}, "layers": [1, 2]}
    b = {"layers": [1, 2], "probe": {"iters": 40000, "lr": 1e-3}, "resolution": 448}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and all(c in "0123456789abcdef" for c in config_hash(a))
    assert config_hash(a) == config_hash(json.loads(json.dumps(a)))
    assert config_hash(a) != config_hash({**a, "resolution": 224})
    assert config_hash({"x": [1, 2]}) != config_hash({"x": [2, 1]})


def test_config_hash_known_value() -> None:
    # sha256('{"a":1,"b":[1,2]}') computed independently with hashlib on the canonical text.
    import hashlib

    expected = hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()[:16]
    assert config_hash({"b": [1, 2], "a": 1}) == expected


# ---------------------------------------------------------------- provenance


def test_capture_provenance_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails fast
    prov = capture_provenance()
    assert set(prov) == {"code_version", "packages", "device"}
    assert prov["code_version"].startswith(tips_bench.__version__)
    assert prov["packages"]["numpy"]
    assert all(isinstance(v, str) for v in prov["packages"].values())
    assert "not-a-package" not in prov["packages"]
    assert "CPU" in prov["device"]


def test_capture_provenance_reports_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            is_available=lambda: True, device_count=lambda: 1, get_device_name=lambda i: "FakeGPU"
        ),
        version=types.SimpleNamespace(cuda="12.4"),
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(results.importlib.util, "find_spec", lambda name: object())
    assert results.device_description() == "CUDA FakeGPU (CUDA 12.4)"


def test_code_version_from_git(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg_parent = str(Path(tips_bench.__file__).resolve().parents[1])

    def fake_git(cwd: Path, *args: str) -> str | None:
        return {"--show-toplevel": pkg_parent, "HEAD": "abc1234"}.get(args[-1], "")

    monkeypatch.setattr(results, "_git", fake_git)
    monkeypatch.setattr(results, "_git_dirty", lambda pkg: True)
    assert results.code_version() == f"{tips_bench.__version__}+gabc1234.dirty"
    monkeypatch.setattr(results, "_git_dirty", lambda pkg: False)
    assert results.code_version() == f"{tips_bench.__version__}+gabc1234"
    monkeypatch.setattr(results, "_git", lambda cwd, *args: None)  # no git / not a checkout
    assert results.code_version() == tips_bench.__version__


# ---------------------------------------------------------------- store


def test_default_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIPS_BENCH_RESULTS", str(tmp_path / "x.jsonl"))
    assert ResultsStore().path == tmp_path / "x.jsonl"
    monkeypatch.delenv("TIPS_BENCH_RESULTS")
    assert ResultsStore().path == Path("results/runs.jsonl")


def test_append_creates_dirs_and_reads_back(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "a" / "b" / "runs.jsonl")
    assert store.rows() == []
    rows = [make_row(run_id=f"r{i}", seed=i) for i in range(3)]
    store.append(rows)
    store.append([])
    assert store.rows() == rows
    assert store.path.read_bytes().endswith(b"\n")


def _worker(path: str, worker: int, n: int) -> None:
    store = ResultsStore(path)
    for i in range(n):
        store.append([make_row(run_id=f"w{worker}-{i}", seed=i, value=float(worker * 1000 + i))])


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.jsonl")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    ResultsStore(path).append([make_row(run_id=f"main-{i}", seed=i) for i in range(5)])  # a multi-row write
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = ResultsStore(path).rows()
    assert len(rows) == 205
    ids = {r.run_id for r in rows}
    assert ids == {f"w{w}-{i}" for w in range(4) for i in range(50)} | {f"main-{i}" for i in range(5)}
    assert all(r.value == float(int(r.run_id[1]) * 1000 + r.seed) for r in rows if r.run_id[0] == "w")
    lines = Path(path).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 206


def test_torn_last_line_is_skipped_and_next_append_parses(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "runs.jsonl")
    store.append([make_row(run_id="ok-1")])
    with open(store.path, "ab") as f:
        f.write(make_row(run_id="torn").to_json().encode()[:57])  # a crash mid-write
    with pytest.warns(RuntimeWarning, match="skipping corrupt"):
        assert [r.run_id for r in store.rows()] == ["ok-1"]
    store.append([make_row(run_id="ok-2"), make_row(run_id="ok-3")])
    with pytest.warns(RuntimeWarning, match=":2:"):
        assert [r.run_id for r in store.rows()] == ["ok-1", "ok-2", "ok-3"]


def test_crash_inside_write_leaves_readable_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path / "runs.jsonl")
    store.append([make_row(run_id="before")])
    real_write = os.write

    def crashing_write(fd: int, data) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError("simulated crash")

    monkeypatch.setattr(results.os, "write", crashing_write)
    with pytest.raises(OSError, match="simulated"):
        store.append([make_row(run_id="lost")])
    monkeypatch.setattr(results.os, "write", real_write)
    store.append([make_row(run_id="after")])
    with pytest.warns(RuntimeWarning):
        assert [r.run_id for r in store.rows()] == ["before", "after"]


def test_garbage_lines_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b'\xff\xfe\n[1, 2]\n{"run_id": 1}\n' + make_row().to_json().encode() + b"\n")
    with pytest.warns(RuntimeWarning):
        rows = ResultsStore(path).rows()
    assert len(rows) == 1


def test_latest_keeps_newest_per_key() -> None:
    old = make_row(run_id="old", timestamp="2025-01-01T00:00:00+00:00", value=1.0)
    new = make_row(run_id="new", timestamp="2025-01-02T00:00:00+00:00", value=2.0)
    other_seed = make_row(run_id="seed", seed=99, timestamp="2024-01-01T00:00:00+00:00")
    other_version = make_row(run_id="v3", task_version=3, timestamp="2024-01-01T00:00:00+00:00")
    kept = latest([new, old, other_seed, other_version])
    assert {r.run_id for r in kept} == {"new", "seed", "v3"}
    tie = make_row(run_id="tie", timestamp=new.timestamp)
    assert [r.run_id for r in latest([new, tie])] == ["tie"]  # same time: the later row in the file wins
    assert latest([]) == []


# ---------------------------------------------------------------- the DataFrame view and the config hash


def test_frame_round_trips_and_latest_frame_matches_latest(tmp_path: Path) -> None:
    rows = [
        make_row(run_id="old", timestamp="2025-01-01T00:00:00+00:00", value=1.0),
        make_row(run_id="new", timestamp="2025-01-02T00:00:00+00:00", value=2.0, limit=8),
        make_row(run_id="seed", seed=99, timestamp="not a time", protocol={"mode": "faithful", "frame": "orig"}),
        make_row(run_id="tie", timestamp="2025-01-02T00:00:00+00:00"),
    ]
    store = ResultsStore(tmp_path / "runs.jsonl")
    store.append(rows)
    frame = store.frame()
    assert list(frame.columns) == list(results.FRAME_COLUMNS) and len(frame) == 4
    assert frame["protocol_mode"].tolist() == ["cached", "cached", "faithful", "cached"]
    assert frame["protocol_frame"].tolist() == ["", "", "orig", ""]
    assert isinstance(frame.loc[0, "protocol"], dict) and str(frame["time"].dt.tz) == "UTC"
    assert results.frame_rows(frame) == rows
    assert results.latest_frame(frame)["run_id"].tolist() == [r.run_id for r in latest(rows)] == ["seed", "tie"]
    assert results.rows_frame([]).empty and list(results.rows_frame([]).columns) == list(results.FRAME_COLUMNS)


def test_run_config_hash_ignores_volatile_keys() -> None:
    base = {"protocol": {"probe": {"epochs": 2}, "timings": {"probe_train_s": 1.9}}, "weights": "pixels", "seed": 0}
    again = {"protocol": {"probe": {"epochs": 2}, "timings": {"probe_train_s": 1.6}}, "weights": "pixels", "seed": 0}
    assert config_hash(base) != config_hash(again)
    assert results.run_config_hash(base) == results.run_config_hash(again)
    assert results.run_config_hash(base) != results.run_config_hash({**base, "seed": 1})
    assert results.stable_config([{"wall_time_s": 3, "a": (1, {"run_id": "x"})}]) == [{"a": [1, {}]}]


@pytest.fixture(scope="module")
def two_identical_runs(tmp_path_factory: pytest.TempPathFactory) -> list[ResultRow]:
    """`tips-bench run` twice with the same arguments, on a task whose probe records timings."""
    from tips_bench.cli import main

    tmp = tmp_path_factory.mktemp("identical")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIPS_BENCH_CACHE", str(tmp / "cache"))
        mp.setenv("TIPS_BENCH_RESULTS", str(tmp / "runs.jsonl"))
        args = ["run", "--backbone", "pixels", "--task", "toy_seg", "--limit", "8", "--set", "resolution=28",
                "--set", "probe.epochs=1", "--no-progress"]
        assert main(args) == 0 and main(args) == 0
    rows = ResultsStore(tmp / "runs.jsonl").rows()
    assert len({r.run_id for r in rows}) == 2
    return rows


def test_identical_runs_share_one_config_hash(two_identical_runs: list[ResultRow]) -> None:
    rows = two_identical_runs
    assert len({r.config_hash for r in rows}) == 1


def test_run_config_hash_of_identical_runs_is_equal(two_identical_runs: list[ResultRow]) -> None:
    rows = two_identical_runs
    assert all(r.protocol.get("timings") for r in rows)  # the volatile part the runner records today
    hashes = {results.run_config_hash({"protocol": r.protocol, "weights": r.checkpoint_hash, "seed": r.seed})
              for r in rows}
    assert len(hashes) == 1
    for run_id in {r.run_id for r in rows}:  # rows of one run share one hash
        assert len({r.config_hash for r in rows if r.run_id == run_id}) == 1


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    import os

    from tips_bench.atomic import atomic_path

    with atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("a\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
