"""Feature cache figures, as ratios measured in one run (CPU, any machine).

1. Ragged storage: keep-aspect patch maps (D, h, w) with varying h, w stored as a ragged array,
   against the same items padded to the largest shape in a fixed array: bytes on disk and
   streaming rate (``iter_batches``, fp16 -> fp32 copies). Target: no padding waste, streaming
   rate within 2x of the fixed array's.
2. Streaming memory: peak RSS growth of a fresh process that streams a ragged cache four times
   larger than a cap, against the cap. Target: under the cap, flat in cache size.
3. Many writers: N processes fill one entry whose producer takes a fixed time per shard (a
   stand-in for a backbone on its own accelerator), against one process; and the claim
   bookkeeping cost per shard (``fill`` with claims vs bare ``write_shard`` calls, trivial data).

    python benchmarks/cache.py                       # defaults below (about a minute on 2 cores)
    python benchmarks/cache.py --cap-mb 64 --writers 2 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

D = 192  # channels of the synthetic patch maps


def _shape(i: int) -> tuple[int, int, int]:
    """Keep-aspect grids: short side 16 patches, long side 16..32, portrait or landscape."""
    long = 16 + (i * 7) % 17
    return (D, 16, long) if i % 2 else (D, long, 16)


def _item(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.standard_normal(_shape(i), dtype=np.float32).astype(np.float16)


def _fill(root: Path, fields: dict, n: int, shard: int, ragged: bool) -> None:
    from tips_bench.cache import FeatureCache

    entry = FeatureCache(root).entry(fields)
    entry.prepare(n, shard)
    h = max(s[1] for s in map(_shape, range(n)))
    w = max(s[2] for s in map(_shape, range(n)))

    def produce(lo: int, hi: int):
        for b in range(lo, hi, 16):
            items = [_item(i) for i in range(b, min(hi, b + 16))]
            if ragged:
                yield {"patches": items}
            else:
                padded = np.zeros((len(items), D, h, w), np.float16)
                for k, x in enumerate(items):
                    padded[k, :, : x.shape[1], : x.shape[2]] = x
                yield {"patches": padded}

    entry.fill(produce, progress=False, check_space=False)


def _stream_rate(root: Path, fields: dict) -> float:
    from tips_bench.cache import FeatureCache

    entry = FeatureCache(root).entry(fields)
    entry.complete()  # verify CRCs before timing
    t0 = time.perf_counter()
    n = sum(len(b["patches"]) for b in entry.iter_batches(["patches"], batch_size=32, seed=0))
    return n / (time.perf_counter() - t0)


def bench_storage(tmp: Path, n: int) -> None:
    _fill(tmp / "r", {"kind": "ragged"}, n, 128, ragged=True)
    _fill(tmp / "f", {"kind": "fixed"}, n, 128, ragged=False)
    size = {k: sum(p.stat().st_size for p in (tmp / k).rglob("*.npy")) for k in ("r", "f")}
    payload = sum(2 * int(np.prod(_shape(i))) for i in range(n))
    rate_r = _stream_rate(tmp / "r", {"kind": "ragged"})
    rate_f = _stream_rate(tmp / "f", {"kind": "fixed"})
    print(f"[storage] {n} keep-aspect maps: ragged {size['r'] / 1e6:.1f} MB (payload {payload / 1e6:.1f} MB, "
          f"overhead {100 * (size['r'] / payload - 1):.2f} %), padded {size['f'] / 1e6:.1f} MB "
          f"-> ragged/padded {size['r'] / size['f']:.3f}")
    print(f"[storage] streaming: ragged {rate_r:.0f} items/s, padded {rate_f:.0f} items/s -> ratio "
          f"{rate_r / rate_f:.2f} (target >= 0.5)")


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _memory_child(root: str, queue) -> None:
    from tips_bench.cache import FeatureCache

    entry = FeatureCache(root).entry({"kind": "memory"})
    entry.complete()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) after imports and verification
    base = _rss_mb()
    total = 0.0
    for batch in entry.iter_batches(["patches"], batch_size=8, seed=0):
        total += float(sum(x[0, 0, 0] for x in batch["patches"]))
    queue.put(_rss_mb("VmHWM") - base)


def bench_memory(tmp: Path, cap_mb: int) -> None:
    from tips_bench.cache import FeatureCache

    per_item = 2 * int(np.mean([np.prod(_shape(i)) for i in range(64)]))
    for factor in (1, 4):
        root = tmp / f"m{factor}"
        n = int(factor * cap_mb * 2**20 / per_item)
        entry = FeatureCache(root).entry({"kind": "memory"})
        entry.prepare(n, max(1, (cap_mb << 20) // 4 // per_item))
        base = [_item(i) for i in range(64)]
        entry.fill(lambda lo, hi, base=base: iter([{"patches": [base[i % 64] for i in range(lo, hi)]}]),
                   progress=False, check_space=False)
        size = sum(p.stat().st_size for p in root.rglob("*.npy")) / 2**20
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_child, args=(str(root), queue))
        proc.start()
        growth = queue.get()
        proc.join()
        print(f"[memory] ragged cache {size:.0f} MB = {size / cap_mb:.1f}x the cap of {cap_mb} MB: streaming peak "
              f"RSS growth {growth:.0f} MB ({'under' if growth < cap_mb else 'OVER'} the cap)")


def _writer(root: str, n: int, shard: int, delay: float, go: str) -> None:
    from tips_bench.cache import FeatureCache

    entry = FeatureCache(root).entry({"kind": "writers"})
    entry.prepare(n, shard)
    while not Path(go).exists():
        time.sleep(0.001)

    def produce(lo: int, hi: int):
        time.sleep(delay)
        yield {"x": np.arange(lo, hi, dtype=np.float32)[:, None].repeat(256, 1)}

    entry.fill(produce, progress=False)


def _fill_with(writers: int, root: Path, n: int, shard: int, delay: float) -> float:
    ctx = mp.get_context("spawn")
    go = root.parent / f"{root.name}.go"
    procs = [ctx.Process(target=_writer, args=(str(root), n, shard, delay, str(go))) for _ in range(writers)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import and prepare before the clock starts
    t0 = time.perf_counter()
    go.touch()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def bench_writers(tmp: Path, counts: list[int], shards: int, delay: float) -> None:
    from tips_bench.cache import FeatureCache

    base = _fill_with(1, tmp / "w1", shards * 4, 4, delay)
    print(f"[writers] 1 writer: {shards} shards x {delay * 1000:.0f} ms producer -> {base:.2f} s")
    for k in counts:
        t = _fill_with(k, tmp / f"w{k}", shards * 4, 4, delay)
        ok = FeatureCache(tmp / f"w{k}").entry({"kind": "writers"}).complete()
        print(f"[writers] {k} writers: {t:.2f} s -> speed-up {base / t:.2f}x (ideal {k}x), entry complete: {ok}")
    # claim bookkeeping per shard: fill() (claim file, heartbeat thread, release) vs bare write_shard()
    n = 400
    data = {"x": np.zeros((1, 16), np.float32)}
    entry = FeatureCache(tmp / "c1").entry({"kind": "claims"})
    entry.prepare(n, 1)
    t0 = time.perf_counter()
    entry.fill(lambda lo, hi: iter([data]), progress=False, check_space=False)
    with_claims = time.perf_counter() - t0
    bare = FeatureCache(tmp / "c2").entry({"kind": "claims"})
    bare.prepare(n, 1)
    t0 = time.perf_counter()
    for s in bare.shards():
        bare.write_shard(s, data)
    without = time.perf_counter() - t0
    print(f"[claims] {n} tiny shards: fill with claims {1000 * with_claims / n:.2f} ms/shard, bare write_shard "
          f"{1000 * without / n:.2f} ms/shard -> {with_claims / without:.2f}x (claim cost "
          f"{1000 * (with_claims - without) / n:.2f} ms/shard)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=512, help="items of the storage comparison")
    ap.add_argument("--cap-mb", type=int, default=128, help="memory cap of the streaming check")
    ap.add_argument("--writers", type=int, nargs="+", default=[2, 4], help="writer counts to compare with 1")
    ap.add_argument("--shards", type=int, default=24, help="shards of the many-writers fill")
    ap.add_argument("--delay", type=float, default=0.25, help="producer seconds per shard (simulated backbone)")
    ap.add_argument("--only", choices=("storage", "memory", "writers"), help="run one section")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "storage"):
            bench_storage(tmp, args.items)
        if args.only in (None, "memory"):
            bench_memory(tmp, args.cap_mb)
        if args.only in (None, "writers"):
            bench_writers(tmp, args.writers, args.shards, args.delay)


if __name__ == "__main__":
    main()
