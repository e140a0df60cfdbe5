"""What every ``tips-bench`` subcommand shares: the one-line-error parser and the backbone options."""

from __future__ import annotations

import argparse

from tips_bench.errors import TipsBenchError
from tips_bench.validate import positive_int


class UsageError(TipsBenchError):
    """A command line argparse rejects: unknown option, missing or malformed value."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``tips-bench: error: ...``, exit 2) printed by ``main``, not
    argparse's usage block; subparsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}; see '{self.prog} --help'")


def add_backbone_args(p: argparse.ArgumentParser, required: bool = True, many: bool = False) -> None:
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
                   "part of the cache key and of every result row; bf16 on a CPU is fast only with AMX or AVX512-BF16)")


def backbone_from_args(args: argparse.Namespace):
    from tips_bench.backbones import load_backbone

    backbone = load_backbone(args.backbone, checkpoint=args.checkpoint, random_init=args.random_init,
                             device=args.device, num_heads=args.num_heads, text_num_heads=args.text_num_heads,
                             arch=args.arch, seed=getattr(args, "seed", 0) or 0)
    if args.compile and hasattr(backbone, "compile"):
        backbone.compile()
    return backbone
