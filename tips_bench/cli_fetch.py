"""``tips-bench fetch BACKBONE...``: download the official checkpoint files into a checkpoint folder."""

from __future__ import annotations

import argparse

from tips_bench.download import FetchReport

_HELP = """\
Download the official checkpoint files of backbones (the URLs of 'tips-bench backbones -v') into a
checkpoint folder: --dir, else the first folder of $TIPS_BENCH_CHECKPOINTS, else the first
checkpoint_dirs entry of the config file (~/.config/tips-bench/config.yaml or $TIPS_BENCH_CONFIG).

Hugging Face files go through huggingface_hub ($HF_ENDPOINT selects a mirror); other URLs are
fetched with resumable Range requests: an interrupted download continues where it stopped when
you run the same command again. Every file is checked against the sha256 in its definition, or
the one recorded in <folder>/.tips-bench-sha256.json on its first download, before it gets its
final name; a mismatch deletes the download and says so.

Examples:
  tips-bench fetch tips_b14 dinov2_b14_reg --dir ~/checkpoints
  tips-bench fetch tips_l14 --verify          # re-hash files already there against the recorded sha256
  TIPS_BENCH_OFFLINE=1 tips-bench fetch tips_l14   # only check that everything is in place
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download backbones' official checkpoint files (resumable, sha256-checked)",
                       description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbones", nargs="+", metavar="BACKBONE",
                   help="backbone name(s), space- or comma-separated (see 'tips-bench backbones')")
    p.add_argument("--dir", help="checkpoint folder to download into (default: the first configured one)")
    p.add_argument("--offline", action="store_true",
                   help="never use the network (also $TIPS_BENCH_OFFLINE=1 or $HF_HUB_OFFLINE=1): fail naming "
                   "the first missing file")
    p.add_argument("--verify", action="store_true",
                   help="re-hash the files already there and compare with the definition's or the recorded sha256")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from tips_bench.backbones.spec import get_backbone_spec
    from tips_bench.download import fetch_backbone

    names = list(dict.fromkeys(n for arg in args.backbones for n in arg.split(",") if n))
    specs = [get_backbone_spec(n) for n in names]  # every name is checked before anything is downloaded
    for spec in specs:
        if not spec.checkpoint_files:
            print(f"{spec.name}: no checkpoint files (nothing to fetch)")
            continue
        if spec.checkpoint_bundled:
            print(f"{spec.name}: its files ship with the package (nothing to fetch)")
            continue
        report = fetch_backbone(spec, dir=args.dir, offline=args.offline, progress=not args.no_progress,
                                verify=args.verify)
        print(summary(report))
    return 0


def summary(report: FetchReport) -> str:
    """One line per file: what happened, its size and the start of its sha256."""
    lines = [f"{report.backbone} in {report.folder}:"]
    for f in report.files:
        sha = f", sha256 {f.sha256[:16]}…" if f.sha256 else ""
        if f.status == "downloaded":
            resumed = f", resumed at {_mb(f.resumed_from)}" if f.resumed_from else ""
            lines.append(f"  {f.relpath}: downloaded ({_mb(f.size)}{resumed}{sha})")
        elif f.status == "present":
            lines.append(f"  {f.relpath}: already there")
        elif f.status == "verified":
            lines.append(f"  {f.relpath}: sha256 verified ({_mb(f.size)}{sha})")
        else:
            lines.append(f"  {f.relpath}: sha256 recorded ({_mb(f.size)}{sha})")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} kB"
