"""Does data loading keep the backbone busy? Images/s of loading alone vs the backbone's images/s.

For each dataset fixture (written in its official format by ``tests/fixture_writers``), the
loading pipeline of a cache fill (decode, resize to the input resolution, resize targets, collate)
runs alone through a ``DataLoader`` with 0 and ``--workers`` worker processes. The backbone's
images/s (TIPS B/14 architecture, random weights, same resolution) is measured in the same run.
Loading keeps up when its images/s exceeds the backbone's (ratio > 1). Fixture images are tiny, so
decoding is cheaper than on real data; resizing to the input resolution dominates here.

    python benchmarks/dataloading.py --size 448 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from tips_bench.data.catalog import open_dataset
from tips_bench.extract import PreparedSplit
from tips_bench.frames import Frame
from tips_bench.protocol import FrameSpec
from tips_bench.tasks.base import FeatureRequest

# The fixture writers are test helpers (tests/fixture_writers), not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CASES = [  # (dataset name, split, writer module, writer, targets)
    ("voc", "val", "voc", "write_voc", ("seg",)),
    ("ade20k", "validation", "ade20k", "write_ade20k", ("seg",)),
    ("nyu_depth", "test", "nyu", "write_nyu_depth", ("depth", "depth_valid")),
    ("imagenet", "val", "imagenet", "write_imagenet", ("label",)),
    ("coco_captions", "test", "captions", "write_coco_karpathy", ()),
]


def loading_rate(dataset, size: int, targets: tuple[str, ...], workers: int, repeat: int) -> float:
    frame = Frame.resolve(FrameSpec(), (size, size), size, 14)  # square bicubic resize to size x size
    split = PreparedSplit(dataset, 0, len(dataset), frame, FeatureRequest(targets=targets))
    items = torch.utils.data.ConcatDataset([split] * repeat)
    loader = torch.utils.data.DataLoader(items, batch_size=8, num_workers=workers, collate_fn=list)
    t0 = time.perf_counter()
    n = sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - t0)


def backbone_rate(size: int, batch: int = 4, iters: int = 2) -> float:
    from tips_bench.backbones import load_backbone

    backbone = load_backbone("tips_b14", random_init=True)
    x = torch.rand(batch, 3, size, size)
    backbone.encode_image(x[:1])
    t0 = time.perf_counter()
    for _ in range(iters):
        backbone.encode_image(x)
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=16, help="passes over each tiny fixture")
    args = parser.parse_args()
    import importlib

    bb = backbone_rate(args.size)
    print(f"backbone (tips_b14 arch, {args.size}px): {bb:.2f} img/s")
    print(f"{'dataset':15} {'workers=0 img/s':>16} {f'workers={args.workers} img/s':>16} {'vs backbone':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, split, module, writer, targets in CASES:
            root = getattr(importlib.import_module(f"fixture_writers.{module}"), writer)(Path(tmp) / name)
            ds = open_dataset(name, split, root=root)
            r0 = loading_rate(ds, args.size, targets, 0, args.repeat)
            rw = loading_rate(ds, args.size, targets, args.workers, args.repeat)
            print(f"{name:15} {r0:16.1f} {rw:16.1f} {rw / bb:11.1f}x")


if __name__ == "__main__":
    main()
