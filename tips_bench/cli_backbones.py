"""``tips-bench backbones``: the backbone registry as a table."""

from __future__ import annotations

import argparse

from tips_bench.validate import positive_int


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list registered backbones and whether their files are found",
                       description="List every registered backbone: family, native resolution, patch size, "
                       "capabilities and whether its checkpoint files are found in the configured folders "
                       "($TIPS_BENCH_CHECKPOINTS, config file checkpoint_dirs).")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each file name and download URL")
    p.add_argument("--width", type=positive_int, default=None, help="table width in characters (default: terminal)")
    p.set_defaults(func=cmd_backbones)
