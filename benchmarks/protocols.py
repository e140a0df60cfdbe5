"""Training modes of the dense probes on the synthetic world: score, wall time and backbone forward passes.

For each dense toy task (segmentation, depth, normals), three ways to train the probe, each from an empty cache:

* ``cached``: one backbone pass per image, no augmentation (the default mode);
* ``faithful, K views``: the reference augmentation, K augmented views per training image drawn once and cached;
* ``faithful, in the loop``: the reference augmentation with the backbone in the loop, a fresh view of every image
  in every pass (``faithful.views: 0``), as the references train.

Reported per task and mode: the headline (mean ± std over probe seeds), the wall time of one run from an empty
cache and its ratio to ``cached``, and the backbone forward passes (images and views through the backbone).

    python benchmarks/protocols.py                        # tips_s14 architecture, random weights, 2 seeds
    python benchmarks/protocols.py --backbone mini_tips_full --seeds 3 --views 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tips_bench.cache import FeatureCache
from tips_bench.runner import Runner, RunOptions
from tips_bench.suite import parse_backbone
from tips_bench.tasks.base import get_task_definition


def measure(backbone: str, task: str, mode: str, views: int, seeds: int, root: Path) -> dict[str, object]:
    name, random_init = parse_backbone(backbone, False)
    overrides = {} if mode == "cached" else {"mode": "faithful", "faithful.views": views}
    runner = Runner(store=None, cache=FeatureCache(root / f"{task}-{mode}-{views}"))
    headline = get_task_definition(task).headline
    values, forwards, first_wall = [], 0, 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        rows = runner.run(name, task, RunOptions(random_init=random_init, seed=seed, progress=False,
                                                 overrides=overrides))
        if seed == 0:
            first_wall = time.perf_counter() - start
        forwards += runner.last_forward_items
        values.append(next(r.value for r in rows if r.metric == headline))
    return {"task": task, "mode": mode if mode == "cached" else (f"faithful, {views} views" if views else
                                                                   "faithful, in the loop"),
            "metric": headline, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "wall_s": first_wall, "forwards": forwards}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tips_s14+random", help="backbone (NAME+random for random weights)")
    parser.add_argument("--tasks", default="toy_seg,toy_depth,toy_normals", help="comma-separated dense toy tasks")
    parser.add_argument("--seeds", type=int, default=2, help="probe seeds per mode (default: 2)")
    parser.add_argument("--views", type=int, default=4, help="cached augmented views per image (default: 4)")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tips_bench_protocols_") as tmp:
        for task in args.tasks.split(","):
            for mode, views in (("cached", 0), ("faithful", args.views), ("faithful", 0)):
                results.append(measure(args.backbone, task, mode, views, args.seeds, Path(tmp)))
                r = results[-1]
                print(f"{r['task']:12} {r['mode']:24} {r['metric']} {r['mean']:.4g} ± {r['std']:.2g}  "
                      f"{r['wall_s']:.1f} s  {r['forwards']} forwards", file=sys.stderr, flush=True)
    print(f"\nbackbone {args.backbone}, {args.seeds} probe seeds, {args.views} cached views per image\n")
    print("| task | mode | headline (mean ± std) | wall time, first seed | vs cached | backbone forwards, all seeds |")
    print("|---|---|---|---|---|---|")
    cached = {r["task"]: r for r in results if r["mode"] == "cached"}
    for r in results:
        ratio = r["wall_s"] / cached[r["task"]]["wall_s"]
        print(f"| {r['task']} | {r['mode']} | {r['metric']} {r['mean']:.4g} ± {r['std']:.2g} | {r['wall_s']:.1f} s | "
              f"{ratio:.1f}x | {r['forwards']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
