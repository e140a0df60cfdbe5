"""Images/s and peak memory of the TIPS B/14 architecture: tips-bench vs the official attention path.

Baseline: the same network (same random weights) with plain, unfused attention (softmax(QK^T)V
materialised), which is how the official TIPS code runs without xFormers. Candidates:
``fused`` (timm's scaled_dot_product_attention, what tips-bench uses by default) and
``fused+compile`` (``torch.compile`` of the same model, ``tips-bench ... --compile``).
Every variant runs in its own child process (so peak RSS is its own) on identical inputs, and
the max abs difference of its outputs from the baseline is reported.

    python benchmarks/backbone_throughput.py                 # 448 and 896, CPU
    python benchmarks/backbone_throughput.py --sizes 448 --iters 3
    python benchmarks/backbone_throughput.py --device cuda --arch l14 g14 --bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

ARCHS = {"b14": "tips_b14", "l14": "tips_l14", "g14": "tips_g14"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(arch: str, variant: str, size: int, batch: int, iters: int, device: str, queue) -> None:
    torch.set_num_threads(torch.get_num_threads())
    from tips_bench.backbones import load_backbone

    backbone = load_backbone(ARCHS[arch], random_init=True, seed=0, device=device)
    if variant.startswith("plain"):
        for block in backbone.model.blocks:
            block.attn.fused_attn = False
    if "compile" in variant:
        backbone.compile()
    dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)

    def step() -> torch.Tensor:
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            feats = backbone.encode_image(x)
        return feats.patches[backbone.num_layers - 1].float().cpu()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mb()
    out = step()  # warm-up (and compilation)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb() - rss_before
    queue.put({"images_per_s": batch * iters / elapsed, "peak_mb": peak, "out": out.numpy()})


def measure(arch: str, variant: str, size: int, batch: int, iters: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(arch, variant, size, batch, iters, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["b14"], choices=sorted(ARCHS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[448, 896])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--bf16", action="store_true", help="also run fused attention in bf16 autocast (tips-bench's "
                        "--precision bf16, the default on CUDA)")
    args = parser.parse_args()
    variants = ["plain", "fused"] + ([] if args.no_compile else ["fused+compile"])
    variants += ["fused-bf16"] if args.bf16 else []
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} iters={args.iters}")
    header = ("arch", "size", "variant", "img/s", "speed-up", "peak MB", "mem ratio", "max|diff|", "rel diff")
    print("{:5} {:>5} {:15} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9}".format(*header))
    for arch in args.arch:
        for size in args.sizes:
            base = measure(arch, "plain", size, args.batch, args.iters, args.device)
            for variant in variants:
                res = base if variant == "plain" else measure(arch, variant, size, args.batch, args.iters, args.device)
                diff = float(np.abs(res["out"] - base["out"]).max())
                rel = diff / max(float(np.abs(base["out"]).max()), 1e-12)  # of the largest feature value
                print(f"{arch:5} {size:5d} {variant:15} {res['images_per_s']:8.2f} "
                      f"{res['images_per_s'] / base['images_per_s']:8.2f}x {res['peak_mb']:9.0f} "
                      f"{res['peak_mb'] / max(base['peak_mb'], 1e-9):8.2f}x {diff:10.2e} {rel:9.2e}", flush=True)


if __name__ == "__main__":
    main()
