"""ImageNet-scale kNN and linear probe within bounded memory: wall time and peak RSS, ratios within one run.

Writes class-clustered random features of ImageNet's shape (1,281,167 train, 50,000 val, 1,024-dim float16,
1,000 classes, train rows sorted by class like the ImageNet folders) into real feature-cache entries in a
temporary folder through the ``CacheEntry`` API, then runs the ``imagenet_knn`` and ``imagenet_linear`` task code
(``KnnTask`` / ``LinearClassificationTask.evaluate`` on those entries), each measurement in a fresh Python process
whose peak RSS (VmHWM) it reports. ``--fraction f`` scales the train set to f and 2f of ImageNet's (val: f of
50,000 in both runs), so the 2f/f ratio of peak RSS shows whether memory grows with the number of train features.
The baseline in the same run is the in-memory kNN (every feature read as float32, then ``knn_predict``): its
memory grows with the train set. Times at full size are extrapolated (kNN: x train x val rows; linear: x train
rows x epochs / epochs run), and say so.

    python benchmarks/scale.py --fraction 0.005                      # quick look (about a minute)
    nice -n 10 python benchmarks/scale.py --fraction 0.1 --skip-baseline   # larger
    python benchmarks/scale.py --fraction 0.5 --only knn              # full-size train set at 2f (2.6 GB on disk)
    python benchmarks/scale.py --train-rows 51247 1281167 --val 50000 --only linear --linear-epochs 10
                                                                      # the full linear protocol at full size

``--train-rows A B`` replaces the f / 2f train sizes by any two (the ratio column then compares B rows with A).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN, VAL, DIM, CLASSES = 1_281_167, 50_000, 1024, 1000
KEY = "global_cls"


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------ writing the cache entries


def write_entry(root: Path, split: str, n: int, dim: int, seed: int) -> Path:
    """A feature-cache entry of ``n`` rows: fp16 features = class centre + noise, labels sorted by class."""
    from tips_bench.cache import CacheEntry, shard_size_for

    entry = CacheEntry(root, {"benchmark": "scale", "split": split, "n": n, "dim": dim, "seed": seed})
    entry.prepare(n, shard_size_for(dim * 2 + 8))
    centres = np.random.default_rng(1234).normal(size=(CLASSES, dim)).astype(np.float32)
    labels = (np.arange(n) * CLASSES // n).astype(np.int64)  # sorted by class, as ImageNet's folders
    for shard in entry.shards():
        rng = np.random.default_rng([seed, shard.index])
        y = labels[shard.start : shard.stop]
        x = centres[y] + 2.0 * rng.normal(size=(len(y), dim)).astype(np.float32)
        entry.write_shard(shard, {KEY: x.astype(np.float16), "label": y})
    return entry.path


# ------------------------------------------------------------------ one measurement (child process)


class _Info:
    def __init__(self, split: str):
        from tips_bench.data.base import DatasetInfo

        self.info = DatasetInfo(name="imagenet", split=split, num_classes=CLASSES)


def _entry_at(path: Path):
    from tips_bench.cache import CacheEntry

    meta = json.loads((path / "meta.json").read_text())
    entry = CacheEntry(path.parent, meta["fields"])
    assert entry.path == path
    return entry


def measure(kind: str, train_path: Path, val_path: Path, epochs: int, device: str = "cpu") -> dict:
    """Run one measurement in this (fresh) process and return its figures."""
    from dataclasses import replace

    import torch

    from tips_bench.backbones.spec import get_backbone_spec
    from tips_bench.probes.knn import knn_predict
    from tips_bench.tasks.base import EvalContext, get_task_definition, make_task

    train, val = _entry_at(train_path), _entry_at(val_path)
    train.complete(), val.complete()  # verify CRCs once, outside the timing
    base_rss = _status_mb("VmRSS")
    t0 = time.perf_counter()
    out: dict = {}
    if kind == "knn_in_memory":
        x, y = train.read(KEY, dtype=np.float32), train.read("label").astype(np.int64)
        q, qy = val.read(KEY, dtype=np.float32), val.read("label").astype(np.int64)
        preds = knn_predict(x, y, q, CLASSES, ks=(10, 20, 100, 200), device=device)
        out["top1"] = float((preds[20] == qy).mean() * 100)
    else:
        name = "imagenet_knn" if kind == "knn" else "imagenet_linear"
        d = get_task_definition(name)
        if kind == "linear":
            d = replace(d, protocol={**d.protocol, "probe": {**d.protocol["probe"], "epochs": epochs}})
        datasets = {"train": _Info("train"), "eval": _Info("val")}
        ctx = EvalContext(entries={"train": train, "eval": val}, datasets=datasets,
                          backbone=get_backbone_spec("dinov2_l14"), global_name="cls", layer_names=[],
                          encode_texts=lambda texts: np.zeros((0, 1)), seed=0, device=device, batch_size=1024,
                          progress=False)
        metrics = make_task(d).evaluate(ctx)
        out |= {"top1": metrics["top1"], "timings": ctx.timings}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out |= {"kind": kind, "wall_s": time.perf_counter() - t0, "peak_rss_mb": _status_mb("VmHWM"),
            "base_rss_mb": base_rss, "threads": torch.get_num_threads(), "device": device}
    return out


def run_child(kind: str, train: Path, val: Path, epochs: int, timeout: float, device: str = "cpu") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(train), str(val), str(epochs), device]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=0.005,
                    help="train rows = f and 2f of 1,281,167 (val: f of 50,000 in both); default 0.005")
    ap.add_argument("--train-rows", type=int, nargs=2, metavar=("A", "B"),
                    help="the two train sizes instead of f and 2f x 1,281,167 (e.g. 51247 1281167)")
    ap.add_argument("--val", type=int, help="val rows (default: fraction x 50,000); kNN time grows with it")
    ap.add_argument("--dim", type=int, default=DIM, help="feature dimension (default 1024, ViT-L)")
    ap.add_argument("--linear-epochs", type=int, default=1,
                    help="epochs of the linear probe per measurement (the protocol's 10 are extrapolated; default 1)")
    ap.add_argument("--only", choices=["knn", "linear"], help="measure one probe only")
    ap.add_argument("--skip-baseline", action="store_true", help="skip the in-memory kNN baseline (it needs "
                    "about 8 bytes x train rows x dim of RAM)")
    ap.add_argument("--workdir", type=Path, help="folder for the cache entries (default: a temporary folder, removed)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per measurement")
    ap.add_argument("--device", default="cpu", help="torch device of the probes (default cpu; e.g. cuda)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, train, val, epochs, *device = args.child
        print(json.dumps(measure(kind, Path(train), Path(val), int(epochs), *device)))
        return
    if not 0 < args.fraction <= 0.5:
        ap.error("--fraction must be in (0, 0.5] (the second run uses 2 x fraction)")
    if args.train_rows and not 2 <= args.train_rows[0] < args.train_rows[1]:
        ap.error(f"--train-rows needs 2 <= A < B, got {args.train_rows[0]} and {args.train_rows[1]}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tips_bench_scale_"))
    try:
        report(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, work: Path) -> None:
    n_val = args.val or max(1, round(args.fraction * VAL))
    sizes = list(args.train_rows or [max(2, round(args.fraction * TRAIN)), max(4, round(2 * args.fraction * TRAIN))])
    t0 = time.perf_counter()
    val = write_entry(work / "cache", "val", n_val, args.dim, seed=1)
    trains = [write_entry(work / "cache", "train", n, args.dim, seed=0) for n in sizes]
    print(f"wrote {sum(sizes) + n_val:,} rows of {args.dim}-dim fp16 features in {time.perf_counter() - t0:.1f}s "
          f"under {work}", flush=True)
    kinds = [k for k in ("knn", "knn_in_memory", "linear") if not args.only or k.startswith(args.only)]
    if args.skip_baseline:
        kinds = [k for k in kinds if k != "knn_in_memory"]
    rows = []
    for kind in kinds:
        for n, train in zip(sizes, trains, strict=True):
            r = run_child(kind, train, val, args.linear_epochs, args.timeout, args.device)
            r["n_train"] = n
            rows.append(r)
            gpu = f"  peak GPU {r['peak_gpu_mb']:7.0f} MB" if "peak_gpu_mb" in r else ""
            print(f"  {kind:14s} n_train={n:>9,}  {r['wall_s']:8.1f}s  peak RSS {r['peak_rss_mb']:7.0f} MB{gpu}  "
                  f"top1 {r['top1']:.2f}", flush=True)
    print_table(rows, n_val, args)


def print_table(rows: list[dict], n_val: int, args: argparse.Namespace) -> None:
    print(f"\nval rows: {n_val:,}; dim {args.dim}; device {args.device}; threads {rows[0]['threads']}; linear epochs "
          f"run: {args.linear_epochs} (protocol: 10); load average at the end {os.getloadavg()[0]:.1f}; last column = "
          "wall time scaled to 1,281,167 train x 50,000 val rows (kNN) or x 10 epochs (linear), an extrapolation\n")
    gpu = "peak_gpu_mb" in rows[0]
    print("| probe | train rows | wall s | peak RSS MB | RSS above imports MB | RSS ratio B/A | "
          + ("peak GPU MB | " if gpu else "") + "extrapolated full ImageNet s |")
    print("|---" * (8 if gpu else 7) + "|")
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind, rs in by_kind.items():
        ratio = rs[1]["peak_rss_mb"] / rs[0]["peak_rss_mb"] if len(rs) == 2 else float("nan")
        for i, r in enumerate(rs):
            scale = TRAIN / r["n_train"]
            full = r["wall_s"] * scale * (VAL / n_val if kind.startswith("knn") else 10 / args.linear_epochs)
            cell = f"**{ratio:.2f}x**" if i == 1 else ""
            g = f"{r['peak_gpu_mb']:.0f} | " if gpu else ""
            print(f"| {kind} | {r['n_train']:,} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f} | {cell} | {g}{full:,.0f} |")
    for r in rows:
        t = r.get("timings") or {}
        if r["kind"] == "linear" and "chosen_lr" in t:
            print(f"\nlinear, {r['n_train']:,} train rows: chosen lr {t['chosen_lr']:g} "
                  f"(held-out top-1 {t.get('heldout_top1', float('nan')):.2f}), val top-1 {r['top1']:.2f}")


if __name__ == "__main__":
    main()
