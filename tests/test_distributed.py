"""torchrun: two CPU ranks (gloo) split the extraction by shard and produce the rows of one process, once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tips_bench.distributed import DistInfo, detect
from tips_bench.results import ResultsStore

ARGS = ["run", "--backbone", "pixels", "--task", "toy_seg,toy_knn", "--limit", "24", "--no-progress", "--format",
        "csv", "--set", "resolution=56", "--set", "probe.epochs=2"]


def _run(argv: list[str], cache: Path, results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIPS_BENCH_CACHE": str(cache), "TIPS_BENCH_RESULTS": str(results),
           "TIPS_BENCH_SHARD_MB": "0.05", "OMP_NUM_THREADS": "1"}  # small shards: several per split
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def _free_port() -> str:
    with socket.socket() as s:  # torchrun's static rendezvous needs a concrete port (0 hangs)
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_gloo_ranks_match_one_process(tmp_path):
    one = _run([sys.executable, "-m", "tips_bench", *ARGS], tmp_path / "c1", tmp_path / "one.jsonl")
    assert one.returncode == 0, one.stderr
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", _free_port(),
                "-m", "tips_bench", *ARGS], tmp_path / "c2", tmp_path / "two.jsonl")
    assert two.returncode == 0, two.stderr
    a, b = ResultsStore(tmp_path / "one.jsonl").rows(), ResultsStore(tmp_path / "two.jsonl").rows()
    key = lambda r: (r.task, r.metric)  # noqa: E731
    assert sorted(map(key, a)) == sorted(map(key, b))  # every row appended exactly once
    assert {key(r): r.value for r in a} == {key(r): r.value for r in b}
    writers = {json.loads(p.read_text())["writer"]["rank"] for p in (tmp_path / "c2").rglob("done.json")}
    assert writers == {"0", "1"}  # both ranks extracted shards
    assert two.stdout.count("result rows appended") == 1  # only rank 0 reports


def test_launcher_environments():
    assert detect({}) == DistInfo()
    assert detect({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == DistInfo(3, 8, 1)
    slurm = detect({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"})
    assert slurm == DistInfo(5, 16, 1) and slurm.device("cuda") == "cuda:1" and slurm.device("cpu") == "cpu"
    assert DistInfo().device("cuda") == "cuda"
