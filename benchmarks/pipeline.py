"""Cost of the evaluation pipeline, as ratios measured in one run (CPU by default).

1. Cache fill vs bare forward: TIPS B/14 architecture (random weights) at 448x448 over N
   synthetic images. ``bare`` = the backbone's forward pass alone over pre-rendered tensors;
   ``fill`` = what ``tips-bench run`` does on a cache miss (render/decode, resize, forward,
   fp16 conversion, shard writing with CRCs). Target: fill <= 1.15 x bare.
2. Cold vs warm probe run: the same task twice; the second run must load no backbone and run no
   forward pass, and take <= 10 % of the cold run. Probe training and evaluation times are
   reported separately.
3. Memory: a linear segmentation probe trained on a cache four times larger than a memory cap,
   in a fresh process; its peak RSS growth over the post-import baseline must stay under the cap.

    python benchmarks/pipeline.py                      # 64 images at 448 (the issue's setting)
    python benchmarks/pipeline.py --images 16 --size 224 --cap-mb 64   # quick look
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> None:
    try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def bench_fill(images: int, size: int, batch: int, workers: int, tmp: Path) -> None:
    from tips_bench.backbones import load_backbone
    from tips_bench.cache import FeatureCache
    from tips_bench.data.synthetic import SceneDataset
    from tips_bench.images import to_tensor
    from tips_bench.results import ResultsStore
    from tips_bench.runner import Runner, RunOptions

    backbone = load_backbone("tips_b14", random_init=True)
    data = SceneDataset("val", images, image_size=(size, size), seed=0)
    pixels = [to_tensor([data[i]["image"] for i in range(b, min(images, b + batch))]) for b in range(0, images, batch)]
    backbone.encode_image(pixels[0][:1])  # warm-up
    t0 = time.perf_counter()
    for x in pixels:
        backbone.encode_image(x, layers=[8, 9, 10, 11])
    bare = time.perf_counter() - t0

    runner = Runner(store=ResultsStore(tmp / "runs.jsonl"), cache=FeatureCache(tmp / "cache"))
    overrides = {"resolution": size, "probe.batch_size": 8}
    opts = RunOptions(random_init=True, limit=images, batch_size=batch, num_workers=workers, progress=False,
                      overrides=overrides)
    from tips_bench.runner import build_request
    from tips_bench.tasks.base import get_task_definition, make_task

    task = make_task(get_task_definition("toy_seg").with_overrides({"resolution": size}))
    request = build_request(task, "eval", backbone.spec)
    frame = task.frame(backbone.spec)
    from dataclasses import replace

    from tips_bench.extract import produce_batches

    entry = FeatureCache(tmp / "fillonly").entry({"bench": size, "n": images})
    entry.prepare(images, shard_size=max(1, images // 4))
    t0 = time.perf_counter()
    entry.fill(lambda lo, hi: produce_batches(backbone, data, lo, hi, frame, request, batch, workers),
               progress=False)
    fill = time.perf_counter() - t0
    print(f"[fill] {images} images at {size}: bare forward {bare:.1f}s ({images / bare:.2f} img/s), "
          f"cache fill {fill:.1f}s ({images / fill:.2f} img/s) -> ratio {fill / bare:.3f} (target <= 1.15)")

    t0 = time.perf_counter()
    cold = runner.run("tips_b14", "toy_seg", replace(opts))
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = runner.run("tips_b14", "toy_seg", replace(opts))
    warm_s = time.perf_counter() - t0
    timings = warm[0].protocol["timings"]
    print(f"[probe] cold run {cold_s:.1f}s, warm run {warm_s:.1f}s -> ratio {warm_s / cold_s:.3f} (target <= 0.10); "
          f"backbone forward items in warm run: {runner.last_forward_items}; warm probe train "
          f"{timings['probe_train_s']:.2f}s, eval {timings['probe_eval_s']:.2f}s; "
          f"mIoU cold {cold[0].value:.2f} / warm {warm[0].value:.2f}")


def _memory_child(cache_root: str, key: dict, queue) -> None:
    import torch  # noqa: F401  (imports count in the baseline, not in the probe's growth)

    from tips_bench.cache import FeatureCache
    from tips_bench.probes.heads import LinearHead
    from tips_bench.probes.losses import segmentation_loss
    from tips_bench.probes.training import Schedule, train_probe

    entry = FeatureCache(cache_root).entry(key)
    entry.missing_shards()  # CRC verification happens here, before the baseline is taken
    dim = entry.item_shape("patches")[0]
    head = LinearHead([dim], 8)

    def loss(m, b):
        return segmentation_loss(m([b["x"]], None, b["y"].shape[1:]), b["y"])

    def batches(epoch: int):
        for b in entry.iter_batches(["patches", "seg"], batch_size=8, seed=epoch):
            yield {"x": torch.from_numpy(b["patches"]), "y": torch.from_numpy(b["seg"]).long()}

    # Warm-up: one step on one batch, so that the baseline includes the training code itself (libtorch pages,
    # allocator pools, thread pools); what follows is the memory that depends on the data.
    warm = [next(batches(0))]
    train_probe(head, lambda e: iter(warm), loss, Schedule(epochs=1, lr=1e-3), steps_per_epoch=1, seed=0)
    warm.clear()
    _reset_peak()
    base = _rss_mb()
    t0 = time.perf_counter()
    train_probe(head, batches, loss, Schedule(epochs=1, lr=1e-3), steps_per_epoch=entry.num_items // 8, seed=0)
    queue.put({"growth_mb": _peak_mb() - base, "seconds": time.perf_counter() - t0})


def bench_memory(cap_mb: int, tmp: Path) -> None:
    for factor in (1, 4):
        _bench_memory_once(cap_mb, factor, tmp)


def _bench_memory_once(cap_mb: int, factor: int, tmp: Path) -> None:
    from tips_bench.cache import FeatureCache

    dim, grid, out = 768, 32, 64
    per_item = dim * grid * grid * 2
    n = int(factor * cap_mb * 2**20 / per_item) + 1
    key = {"bench": "memory", "n": n}
    entry = FeatureCache(tmp / "mem").entry(key)
    entry.prepare(n, shard_size=max(1, (16 << 20) // per_item))
    rng = np.random.default_rng(0)

    def produce(lo: int, hi: int):
        for b in range(lo, hi, 8):
            k = min(hi, b + 8) - b
            yield {"patches": rng.standard_normal((k, dim, grid, grid), dtype=np.float32).astype(np.float16),
                   "seg": rng.integers(0, 8, (k, out, out), dtype=np.uint8)}

    entry.fill(produce)
    size_mb = sum(f.stat().st_size for f in entry.path.rglob("*.npy")) / 2**20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(str(tmp / "mem"), key, queue))
    proc.start()
    res = queue.get()
    proc.join()
    print(f"[memory] cache {size_mb:.0f} MB ({n} items) = {size_mb / cap_mb:.1f}x the cap of {cap_mb} MB; probe "
          f"training peak RSS growth {res['growth_mb']:.0f} MB -> {'under' if res['growth_mb'] < cap_mb else 'OVER'}"
          f" the cap ({res['seconds']:.1f}s for one epoch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    parser.add_argument("--cap-mb", type=int, default=256, help="memory cap for the streaming probe")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fill", "memory"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if "fill" not in args.skip:
            bench_fill(args.images, args.size, args.batch, args.workers, Path(tmp))
        if "memory" not in args.skip:
            bench_memory(args.cap_mb, Path(tmp))


if __name__ == "__main__":
    main()
