"""The ``tips-bench`` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tips_bench import __version__
from tips_bench.errors import TipsBenchError
from tips_bench.validate import positive_int

Handler = Callable[[argparse.Namespace], int]


class UsageError(TipsBenchError):
    """A command line argparse rejects: unknown option, missing or malformed value."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``tips-bench: error: ...``, exit 2) printed by ``main``, not
    argparse's usage block; subparsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}; see '{self.prog} --help'")


def _add_backbone_args(p: argparse.ArgumentParser, required: bool = True, many: bool = False) -> None:
    if many:
        p.add_argument("--backbone", action="append", help="backbone name(s), comma-separated or repeated; "
                       "NAME+random = seeded random weights (see 'tips-bench backbones')")
    else:
        p.add_argument("--backbone", required=required, help="registered backbone name (see 'tips-bench backbones')")
    p.add_argument("--checkpoint", help="checkpoint file or folder (default: search $TIPS_BENCH_CHECKPOINTS and "
                   "the config file's checkpoint_dirs for the official file names)")
    p.add_argument("--random-init", action="store_true",
                   help="use the backbone's architecture with seeded random weights (no file needed)")
    p.add_argument("--download", action="store_true",
                   help="first download missing checkpoint files from the definition's URLs into the --checkpoint "
                   "folder or the first checkpoint folder (as 'tips-bench fetch'; $TIPS_BENCH_OFFLINE=1 forbids it)")
    p.add_argument("--num-heads", type=positive_int,
                   help="override the attention head count of the image tower (TIPS)")
    p.add_argument("--text-num-heads", type=positive_int,
                   help="override the attention head count of the text tower (TIPS)")
    p.add_argument("--arch", help="open_clip architecture name, for the generic 'openclip' backbone")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (faster on large inputs; the first batch compiles)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="extraction precision: autocast to bf16/fp16, or fp32 (default: bf16 on CUDA, fp32 on CPU; "
                   "part of the cache key and of every result row)")


def _backbone_from_args(args: argparse.Namespace):
    from tips_bench.backbones import load_backbone

    backbone = load_backbone(args.backbone, checkpoint=args.checkpoint, random_init=args.random_init,
                             device=args.device, num_heads=args.num_heads, text_num_heads=args.text_num_heads,
                             arch=args.arch, seed=getattr(args, "seed", 0) or 0)
    if args.compile and hasattr(backbone, "compile"):
        backbone.compile()
    return backbone


def cmd_backbones(args: argparse.Namespace) -> int:
    """Print the backbone registry as a table."""
    from rich.console import Console
    from rich.table import Table

    from tips_bench.backbones import all_backbone_specs
    from tips_bench.backbones.checkpoints import CheckpointFiles

    table = Table(title="tips-bench backbones")
    for col in ("name", "family", "res", "patch", "image global", "dense", "text", "checkpoint files found"):
        table.add_column(col)
    for spec in all_backbone_specs():
        status = CheckpointFiles(spec, None).status()
        found = ", ".join(f"{role} {'yes' if ok else 'no'}" for role, ok in status.items()) or "none needed"
        marks = ["yes" if spec.can(c) else "-" for c in ("image_global", "dense", "text")]
        table.add_row(spec.name, spec.family, str(spec.native_resolution), str(spec.patch_size), *marks, found)
    Console(width=args.width).print(table)
    if args.verbose:
        for spec in all_backbone_specs():
            print(f"{spec.name}: {spec.description}")
            for role, fname in spec.checkpoint_files.items():
                print(f"    {role}: {fname}  <- {spec.checkpoint_urls.get(role, '')}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """Encode images and write their features to an .npz file."""
    from tips_bench.features_cli import write_features

    write_features(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tips-bench",
        description="Evaluate frozen vision and vision-language backbones the way the TIPS papers do.",
    )
    parser.add_argument("--version", action="version", version=f"tips-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("backbones", help="list registered backbones and whether their files are found",
                       description="List every registered backbone: family, native resolution, patch size, "
                       "capabilities and whether its checkpoint files are found in the configured folders "
                       "($TIPS_BENCH_CHECKPOINTS, config file checkpoint_dirs).")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each file name and download URL")
    p.add_argument("--width", type=positive_int, default=None, help="table width in characters (default: terminal)")
    p.set_defaults(func=cmd_backbones)

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
    _add_backbone_args(p)
    p.add_argument("--image-size", help="HxW to resize every image to, multiples of the patch size "
                   "(default: the backbone's native resolution, square)")
    p.add_argument("--layers", help="comma-separated block indices to save as well (negative = from the end)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--out", required=True, help="output .npz file (written atomically)")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=cmd_features)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _register_evaluation(sub: argparse._SubParsersAction) -> None:
    from tips_bench.cli_commands import register

    register(sub)


def _register_pretrain(sub: argparse._SubParsersAction) -> None:
    from tips_bench.cli_pretrain import register

    register(sub)


def _register_cache(sub: argparse._SubParsersAction) -> None:
    from tips_bench.cli_cache import register

    register(sub)


def _register_fetch(sub: argparse._SubParsersAction) -> None:
    from tips_bench.cli_fetch import register

    register(sub)


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_evaluation, _register_cache,
                                                                       _register_fetch, _register_pretrain]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv or ["run"])  # no arguments: the built-in synthetic suite
        return int(args.func(args) or 0)
    except TipsBenchError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message quotes (YAML errors, paths)
        print(f"tips-bench: error: {message.removeprefix('tips-bench: ')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tips-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
