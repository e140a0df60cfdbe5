"""``tips-bench features``: encode image files and save the features."""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from tips_bench.atomic import atomic_path
from tips_bench.errors import InputError
from tips_bench.images import load_image, parse_size, to_tensor
from tips_bench.precision import autocast, resolve_precision


def parse_layers(text: str | None) -> list[int] | None:
    """'2,5,-1' -> [2, 5, -1]."""
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise InputError(f"--layers '{text}' is not a comma-separated list of integers") from exc


def write_features(args: argparse.Namespace) -> None:
    """Load the backbone, encode ``args.images`` in batches, write ``args.out`` atomically."""
    from tips_bench.cli_args import backbone_from_args

    if not str(args.out).endswith(".npz"):
        raise InputError(f"--out {args.out} must end in .npz")
    from pathlib import Path

    from tips_bench.validate import check_device, check_output_file

    check_output_file(args.out, "--out")
    extra_layers = parse_layers(args.layers)
    size_arg = parse_size(args.image_size) if args.image_size else None
    for image in args.images:  # every input is there before the backbone is loaded
        p = Path(image)
        if not p.exists():
            raise InputError(f"image {image} does not exist")
        if not p.is_file():
            raise InputError(f"image {image} is a folder, not an image file; pass the image files themselves")
    check_device(args.device)
    if getattr(args, "download", False) and not args.random_init:
        from tips_bench.download import ensure_backbones

        ensure_backbones([(args.backbone, False)], checkpoint=args.checkpoint)
    from tips_bench.validate import check_backbone_files

    check_backbone_files(args.backbone, args.random_init, args.checkpoint)
    precision = resolve_precision(args.precision, args.device)
    backbone = backbone_from_args(args)
    n = backbone.spec.native_resolution
    size = size_arg or (n, n)
    backbone.check_size(*size)
    layers = backbone.resolve_layers(extra_layers) if extra_layers else []
    last = backbone.num_layers - 1
    out: dict[str, list[np.ndarray]] = {}
    for start in tqdm(range(0, len(args.images), args.batch_size), desc="encoding", unit="batch",
                      disable=len(args.images) <= args.batch_size):
        paths = args.images[start : start + args.batch_size]
        with autocast(precision, backbone.device):
            feats = backbone.encode_image(to_tensor([load_image(p, size) for p in paths]), layers=[*layers, last])
        for name, value in feats.globals.items():
            out.setdefault(f"global_{name}", []).append(value.float().cpu().numpy())
        out.setdefault("patches", []).append(feats.patches[last].float().cpu().numpy())
        for i in layers:
            out.setdefault(f"patches_layer{i}", []).append(feats.patches[i].float().cpu().numpy())
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    arrays |= {"image_paths": np.array([str(p) for p in args.images]), "image_size": np.array(size),
               "precision": np.array(precision),
               "backbone": np.array(backbone.name)}
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items() if v.ndim > 1))
