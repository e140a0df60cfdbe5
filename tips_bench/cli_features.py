"""``tips-bench features``: the parser; the work is in :mod:`tips_bench.features_cli` (imported when run)."""

from __future__ import annotations

import argparse

from tips_bench.cli_args import add_backbone_args
from tips_bench.validate import positive_int


def cmd_features(args: argparse.Namespace) -> int:
    """Encode images and write their features to an .npz file."""
    from tips_bench.features_cli import write_features

    write_features(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="write global embeddings and patch feature maps of images to an .npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Encode images with a backbone and save the features.\n\n"
        "Arrays in the output .npz:\n"
        "  global_<name>   float32 (N, D)      each global embedding (TIPS: global_cls1, global_cls2;\n"
        "                                      CLIP: global_embedding, global_cls; SigLIP: global_embedding;\n"
        "                                      DINOv2: global_cls; pixels: global_mean)\n"
        "  patches         float32 (N, D, h, w) final-layer patch features after the final norm\n"
        "  patches_layer<i> float32 (N, D, h, w) block i (0-based) when --layers is given\n"
        "  image_paths     str (N,)            the input files, in order\n"
        "  image_size      int (2,)            (height, width) the images were resized to\n"
        "  backbone        str                 the backbone name",
    )
    add_backbone_args(p)
    p.add_argument("--image-size", help="HxW to resize every image to, multiples of the patch size "
                   "(default: the backbone's native resolution, square)")
    p.add_argument("--layers", help="comma-separated block indices to save as well (negative = from the end)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--out", required=True, help="output .npz file (written atomically)")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=cmd_features)
