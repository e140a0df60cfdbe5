"""``tips-bench cache ls | du | rm | verify``: inspect and maintain the feature cache. No logic lives here."""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from tips_bench.cache import CacheBusyError, CacheEntry, FeatureCache
from tips_bench.cache_disk import free_bytes, human_bytes
from tips_bench.errors import TipsBenchError


def _cache(args: argparse.Namespace) -> FeatureCache:
    cache = FeatureCache(args.cache_dir)
    cache.check_root()
    return cache


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _split(values: list[str] | None) -> list[str]:
    return [v for a in values or [] for v in a.split(",") if v]


def backbone_label(entry: CacheEntry) -> str:
    """The backbone as result rows name it (``NAME+random`` for random-init weights)."""
    name = str(entry.fields.get("backbone", "?"))
    return f"{name}+random" if str(entry.fields.get("weights", "")).startswith("random-init:") else name


def data_label(entry: CacheEntry) -> str:
    f = entry.fields
    if f.get("kind") == "text":
        return f"texts ({f.get('count', '?')})"
    ds = f.get("dataset") or {}
    return f"{ds.get('name', '?')}/{ds.get('split', '?')}" if isinstance(ds, dict) else str(ds)


def _resolution(entry: CacheEntry) -> str:
    res = entry.fields.get("resolution")
    return "x".join(str(v) for v in res) if isinstance(res, list | tuple) else "-" if res is None else str(res)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _select(cache: FeatureCache, args: argparse.Namespace) -> list[CacheEntry]:
    """Entries named by key (prefixes) or matching every given --backbone / --task filter."""
    entries = [cache.find(k) for k in args.keys] if args.keys else cache.entries()
    backbones, tasks = _split(args.backbone), _split(args.task)
    if backbones:
        entries = [e for e in entries if backbone_label(e) in backbones or e.fields.get("backbone") in backbones]
    if tasks:
        entries = [e for e in entries if set(tasks) & set(e.users())]
    return entries


def _check_names(backbones: list[str], tasks: list[str]) -> None:
    """``cache rm``: a misspelt --backbone or --task filter is an error, not a silent 'nothing removed'."""
    from tips_bench.backbones.spec import get_backbone_spec
    from tips_bench.tasks.base import get_task_definition

    for name in backbones:
        get_backbone_spec(name.removesuffix("+random"))
    for name in tasks:
        get_task_definition(name)


def _state(entry: CacheEntry) -> str:
    st = entry.status()
    if st.state == "filling":
        return f"filling {st.shards_done}/{st.shards_total} ({'; '.join(st.writers)})"
    if st.state == "partial":
        return f"partial {st.shards_done}/{st.shards_total}"
    return st.state


def cmd_cache_ls(args: argparse.Namespace) -> int:
    """Print one row per entry and the total size."""
    from rich.table import Table

    cache = _cache(args)
    entries = _select(cache, args)
    table = Table(title=f"feature cache {cache.root}")
    for col in ("key", "backbone", "data", "resolution", "items", "status", "size", "last used", "tasks"):
        table.add_column(col, justify="right" if col in ("items", "size") else "left")
    total = 0
    for e in entries:
        size = e.size_bytes()
        total += size
        table.add_row(e.key, backbone_label(e), data_label(e), _resolution(e), str(e.num_items), _state(e),
                      human_bytes(size), _when(e.last_used()), ", ".join(e.users()) or "-")
    if entries:
        _console().print(table)
    where = cache.root if cache.root.exists() else f"{cache.root} (does not exist yet: nothing cached)"
    print(f"{len(entries)} entries, {human_bytes(total)} in {where}")
    return 0


def cmd_cache_du(args: argparse.Namespace) -> int:
    """Sizes per backbone and in total, and the free space left."""
    cache = _cache(args)
    entries = _select(cache, args)
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in entries:
        per[backbone_label(e)][0] += 1
        per[backbone_label(e)][1] += e.size_bytes()
    for name, (count, size) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"{human_bytes(size):>10}  {name} ({count} entries)")
    total = sum(size for _, size in per.values())
    print(f"{human_bytes(total):>10}  total, {len(entries)} entries in {cache.root} "
          f"({human_bytes(free_bytes(cache.root))} free on that file system)")
    return 0


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise TipsBenchError("refusing to delete cache entries without confirmation because stdin is not a "
                             "terminal; pass --yes")
    return input(f"{prompt} [y/N] ").strip().lower() in ("y", "yes")


def cmd_cache_rm(args: argparse.Namespace) -> int:
    """Remove the matching entries, never one that another process is filling."""
    cache = _cache(args)
    _check_names(_split(args.backbone), _split(args.task))
    entries = _select(cache, args)
    cache.clean_trash()
    if not entries:
        print(f"no entry of {cache.root} matches; nothing removed")
        return 0
    size = sum(e.size_bytes() for e in entries)
    what = "all" if not (args.keys or args.backbone or args.task) else "the"
    if not args.yes and not _confirm(f"remove {what} {len(entries)} entries ({human_bytes(size)}) from {cache.root}?"):
        print("nothing removed")
        return 0
    skipped = 0
    for e in entries:
        try:
            e.remove()
            print(f"removed {e.key} ({backbone_label(e)}, {data_label(e)})")
        except CacheBusyError as exc:
            skipped += 1
            print(f"skipped {e.key}: {exc}")
    print(f"removed {len(entries) - skipped} entries" + (f", skipped {skipped} in use" if skipped else ""))
    return 1 if skipped else 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    """Check every shard's CRC32s; --fix deletes corrupt shards for the next run to rebuild."""
    from tqdm import tqdm

    cache = _cache(args)
    entries = _select(cache, args)
    total = sum(len(e.shards()) for e in entries)
    bar = tqdm(total=total, desc="verify", unit="shard", disable=args.no_progress or not total, leave=False)
    corrupt = 0
    try:
        for e in entries:
            st = e.status()
            if st.state in ("old format", "empty"):
                tqdm.write(f"{st.state:10} {e.key}: not usable by this version; remove it with "
                           f"'tips-bench cache rm {e.key}'")
                continue
            problems = e.verify(fix=args.fix, on_shard=lambda _: bar.update())
            corrupt += len(problems)
            for shard, problem in problems:
                tqdm.write(f"{'corrupt':10} {e.key} {shard}: {problem}")
            if not problems:
                label = "ok" if st.state == "complete" else st.state
                tqdm.write(f"{label:10} {e.key} ({st.shards_done}/{st.shards_total} shards)")
    finally:
        bar.close()
    if args.fix:
        cache.clean_trash()
    verdict = "deleted; the next run rebuilds them" if args.fix else "run with --fix to delete them"
    print(f"verified {len(entries)} entries ({total} shards): "
          + (f"{corrupt} corrupt shard(s) ({verdict})" if corrupt else "no corrupt shard"))
    return 1 if corrupt and not args.fix else 0


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="*", metavar="KEY", help="entry keys or unique prefixes of 4+ characters "
                   "(default: every entry)")
    p.add_argument("--backbone", action="append", help="only entries of this backbone (comma-separated or "
                   "repeated; NAME+random = random-init weights only)")
    p.add_argument("--task", action="append", help="only entries used by this task (comma-separated or repeated)")
    p.add_argument("--cache-dir", help="feature cache folder (default: $TIPS_BENCH_CACHE or "
                   "~/.cache/tips-bench/features)")


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("cache", help="list, size, remove and verify cached features", formatter_class=fmt,
                       description=(
                           "Inspect and maintain the feature cache (--cache-dir, $TIPS_BENCH_CACHE or\n"
                           "~/.cache/tips-bench/features). Each entry holds one backbone's features of one\n"
                           "dataset split at one resolution; runs rebuild whatever is missing. Examples:\n"
                           "  tips-bench cache ls                        # every entry, its status and size\n"
                           "  tips-bench cache du                        # size per backbone, free space\n"
                           "  tips-bench cache rm --backbone tips_l14    # asks first; --yes to skip asking\n"
                           "  tips-bench cache rm --task ade20k_seg --yes\n"
                           "  tips-bench cache verify --fix              # CRC-check every shard, delete corrupt ones\n"
                           "See docs/cache.md."))
    csub = p.add_subparsers(dest="cache_command", metavar="{ls,du,rm,verify}", required=True)
    q = csub.add_parser("ls", help="list entries: key, backbone, data, resolution, items, status, size, last use")
    _filters(q)
    q.set_defaults(func=cmd_cache_ls)
    q = csub.add_parser("du", help="disk use per backbone and in total, and the free space left")
    _filters(q)
    q.set_defaults(func=cmd_cache_du)
    q = csub.add_parser("rm", help="remove matching entries (all when no filter); never one being filled",
                        description="Remove the entries named by KEY or matching --backbone/--task (every entry "
                        "when none is given). Asks for confirmation unless --yes. An entry another process is "
                        "filling is skipped (exit status 1).")
    _filters(q)
    q.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=cmd_cache_rm)
    q = csub.add_parser("verify", help="check every shard's sizes and CRC32s (exit 1 on corruption)",
                        description="Read every shard and check its files' sizes and CRC32s. Corrupt shards are "
                        "reported (exit status 1); --fix deletes them, and leftovers of dead writers, so that "
                        "the next run rebuilds them. Shards not written yet (partial entries) are not errors.")
    _filters(q)
    q.add_argument("--fix", action="store_true", help="delete corrupt shards so the next run rebuilds them")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_cache_verify)
