"""Handlers of the evaluation subcommands (run, tasks, validate, report, export, regress, data)."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

from tips_bench.errors import InputError, TipsBenchError
from tips_bench.validate import nonnegative_int, positive_int


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _store(path: str | None):
    from tips_bench.results import ResultsStore

    store = ResultsStore(path) if path else ResultsStore()
    if store.path.is_dir():
        raise InputError(f"the results store {store.path} is a folder; name a .jsonl file with --results or "
                         "$TIPS_BENCH_RESULTS")
    return store


def _headline_columns(tasks) -> list[str]:
    from tips_bench.tasks.base import get_task_definition

    columns = []
    for task in dict.fromkeys(tasks):
        try:
            base = re.sub(r" \((cached|faithful)\)$", "", task.removesuffix(" (smoke)"))
            columns.append(f"{task}/{get_task_definition(base).headline}")
        except TipsBenchError:
            continue
    return columns


def _mark_smoke_runs(frame):
    """Label rows for display. Dense tasks carry their training mode, '<task> (cached)' or '<task> (faithful)', so
    the modes are never averaged together and no number stands beside a paper number without its mode. Rows from
    --limit or --set runs (other than --mode) are shown as '<task> (smoke)': never averaged with, or compared
    against the paper as, full-protocol results. The task's own name stays in ``base_task``."""
    frame = frame.assign(base_task=frame["task"])
    modes = frame["protocol"].map(lambda p: p.get("mode"))
    has_mode = modes.notna()
    frame.loc[has_mode, "task"] = frame.loc[has_mode, "task"] + " (" + modes[has_mode].astype(str) + ")"
    overridden = frame["protocol"].map(lambda p: bool(set(p.get("overrides") or {}) - {"mode"}))
    smoke = frame["limit"].fillna(0).astype(int).ne(0) | overridden
    frame.loc[smoke, "task"] = frame.loc[smoke, "task"] + " (smoke)"
    return frame


def _print_table(frame, fmt: str, paper: bool, title: str = "", all_metrics: bool = False) -> None:
    from tips_bench import report

    frame = _mark_smoke_runs(frame)
    metrics = None if all_metrics else _headline_columns(frame["task"]) or None
    table = report.comparison_table(frame, paper=report.load_paper_reference() if paper else None, metrics=metrics)
    if fmt == "markdown":
        print(report.render_markdown(table))
    elif fmt == "csv":
        print(report.render_csv(table), end="")
    else:
        rich_table = report.render_rich(table)
        if title:
            rich_table.title = title
        _console().print(rich_table)


def _store_frame(args: argparse.Namespace):
    """The results store as a DataFrame (only ``--task`` tasks when given); an error when it holds nothing."""
    from tips_bench.results import CorruptResultLine

    store = _store(args.results)
    with warnings.catch_warnings(record=True) as caught:  # corrupt lines: said once, below
        warnings.simplefilter("always")
        frame = store.frame()
    skipped = [w for w in caught if issubclass(w.category, CorruptResultLine)]
    tasks = [t for a in getattr(args, "task", None) or [] for t in a.split(",") if t]
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    if frame.empty:
        which = f" for {', '.join(tasks)}" if tasks else ""
        if skipped and not tasks:
            first = skipped[0].message
            raise TipsBenchError(f"{store.path} holds no readable result rows, only {len(skipped)} corrupt line(s) "
                                 f"(the first: line {first.lineno} ({first.reason})); pass a results file written "
                                 "by 'tips-bench run'")
        raise TipsBenchError(f"no results{which} in {store.path}; run 'tips-bench run' first")
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return frame


def _run_options(args: argparse.Namespace):
    from tips_bench.runner import RunOptions

    return RunOptions(checkpoint=args.checkpoint, random_init=False, limit=args.limit, device=args.device,
                      batch_size=args.batch_size, num_workers=args.num_workers,
                      progress=not args.no_progress, num_heads=args.num_heads,
                      text_num_heads=args.text_num_heads, arch=args.arch, compile=args.compile,
                      precision=args.precision,
                      overrides=_parse_overrides(args.set) | _mode_override(args),
                      extra={"root": args.root} if args.root else {})


def _mode_override(args: argparse.Namespace) -> dict:
    """``--mode faithful`` is the protocol override ``mode=faithful`` (recorded like any other)."""
    return {"mode": args.mode} if getattr(args, "mode", None) else {}


def _parse_overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TipsBenchError(f"--set {item} is not KEY=VALUE (e.g. --set probe.epochs=1)")
        try:
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", parsed.strip()):
                parsed = float(parsed)  # YAML 1.1 reads 1e-7 (no dot) as a string
            out[key.strip()] = parsed
        except yaml.YAMLError:
            raise TipsBenchError(f"--set {item}: the value '{value}' is not valid YAML (quote strings, close "
                                 "brackets)") from None
    return out


def _preflight(args: argparse.Namespace, backbones: list[tuple[str, bool]], tasks: list[str], opts) -> None:
    """Every check that needs no backbone: names, options, devices, data folders and the output paths, so that
    bad input fails before any work and before anything is written."""
    from tips_bench import validate
    from tips_bench.backbones.spec import get_backbone_spec
    from tips_bench.cache import FeatureCache, shard_size_for
    from tips_bench.runner import overrides_per_task
    from tips_bench.tasks.base import get_task_definition, make_task

    validate.check_device(opts.device)
    specs = [get_backbone_spec(name) for name, _ in backbones]
    definitions = [get_task_definition(t) for t in tasks]
    per_task = overrides_per_task(tasks, opts.overrides)
    made = [make_task(d.with_overrides(per_task[d.name])) for d in definitions]
    for spec in specs:
        width = spec.architecture.get("embed_dim") if opts.num_heads else None
        if width and int(width) % opts.num_heads:
            raise InputError(f"--num-heads {opts.num_heads} does not divide the width {width} of {spec.name}; pass a "
                             f"divisor such as {max(1, int(width) // 64)}")
    if len(specs) * len(made) == 1:  # one cell: a capability it lacks is an error, not a skipped cell
        made[0].check_backbone(specs[0])
    if getattr(args, "data_root", None):
        validate.check_input_dir(args.data_root, "--data-root")
    if getattr(args, "root", None):
        validate.check_input_dir(args.root, "--root")
    if hasattr(args, "results"):
        validate.check_output_file(_store(args.results).path, "--results" if args.results else "results store")
    cache = FeatureCache(args.cache_dir)
    cache.check_root()
    validate.check_output_dir(cache.root, "--cache-dir" if args.cache_dir else "feature cache folder")
    shard_size_for(1)  # $TIPS_BENCH_SHARD_MB


def _check_checkpoints(args: argparse.Namespace, backbones: list[tuple[str, bool]]) -> None:
    """Each backbone's checkpoint file is present and reads as a checkpoint, before any work."""
    from tips_bench.validate import check_backbone_files

    for name, random_init in dict.fromkeys(backbones):
        check_backbone_files(name, random_init, args.checkpoint)


def _seeds(args: argparse.Namespace) -> list[int]:
    return list(range(args.seeds)) if args.seeds else [args.seed]


def _runner(args: argparse.Namespace):
    import os

    from tips_bench.cache import FeatureCache
    from tips_bench.runner import Runner

    if args.data_root:
        os.environ["TIPS_BENCH_DATA"] = args.data_root
    return Runner(store=_store(args.results), cache=FeatureCache(args.cache_dir))


def _download_if_asked(args: argparse.Namespace, backbones: list[tuple[str, bool]]) -> None:
    """``--download``: fetch the missing checkpoint files of these backbones before anything runs."""
    if args.download:
        from tips_bench.download import ensure_backbones

        ensure_backbones(backbones, checkpoint=args.checkpoint, progress=not args.no_progress)


def cmd_run(args: argparse.Namespace) -> int:
    from tips_bench import suite
    from tips_bench.runner import run_grid

    if args.backbone:
        backbones = [suite.parse_backbone(b, args.random_init) for a in args.backbone for b in a.split(",") if b]
    else:
        backbones = list(suite.DEFAULT_BACKBONES)
    tasks = [t for a in args.task for t in a.split(",") if t] if args.task else suite.suite_tasks(args.suite)
    if not args.backbone and not args.task:
        print(f"tips-bench: running the built-in synthetic suite '{args.suite}' ({len(tasks)} tasks) on the "
              "no-download baselines pixels, tips_s14+random and the shipped mini TIPS backbones (mini_*); "
              "see 'tips-bench run --help' for real backbones")
    from tips_bench import distributed

    info = distributed.detect()
    opts = _run_options(args)
    _preflight(args, backbones, tasks, opts)
    opts.device = info.device(opts.device)
    if info.is_main:
        _download_if_asked(args, backbones)
    _check_checkpoints(args, backbones)
    runner = _runner(args)
    runner.dist = info
    distributed.init(info, opts.device)
    rows = run_grid(backbones, tasks, _seeds(args), opts, runner)
    distributed.finish(info)
    if not info.is_main:
        return 0
    if not rows:
        raise TipsBenchError("no task could run on these backbones; see the messages above")
    from tips_bench.results import rows_frame

    _print_table(rows_frame(rows), args.format, paper=not args.no_paper, title="tips-bench results (this run)")
    print(f"{len(rows)} result rows appended to {runner.store.path}")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run tasks on the oracle backbone and compare each headline with its known optimum."""
    import os

    from rich.table import Table

    from tips_bench import suite
    from tips_bench.cache import FeatureCache
    from tips_bench.runner import Runner, RunOptions
    from tips_bench.selftest import run_selftest

    if args.data_root:
        os.environ["TIPS_BENCH_DATA"] = args.data_root
    tasks = [t for a in args.task for t in a.split(",") if t] if args.task else \
        [t for name in args.suite.split(",") for t in suite.suite_tasks(name)]
    opts = RunOptions(limit=args.limit, device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                      progress=not args.no_progress, overrides=_parse_overrides(args.set),
                      extra={"root": args.root} if args.root else {})
    _preflight(args, [("oracle", False)], tasks, opts)
    checks = run_selftest(tasks, Runner(store=None, cache=FeatureCache(args.cache_dir)), opts)
    table = Table(title="tips-bench selftest (oracle backbone)")
    for col in ("task", "headline", "oracle", "optimum", "pass if", "", "optimum from"):
        table.add_column(col)
    for c in checks:
        bound = f"{'>=' if c.higher_is_better else '<='} {c.threshold:.4g}"
        table.add_row(c.task, c.metric, f"{c.score:.4g}", f"{c.optimum:.4g}", bound,
                      "ok" if c.ok else "[bold red]FAIL[/]", c.how)
    _console().print(table)
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tips_bench.tasks.base import all_task_definitions

    table = Table(title="tips-bench tasks")
    for col in ("name", "v", "type", "dataset", "splits", "metrics (headline first)", "protocol"):
        table.add_column(col)
    for d in all_task_definitions():
        head = d.p("head", {})
        proto = ", ".join(str(x) for x in [d.p("resolution", "native"), d.p("layers", ""),
                                            head.get("kind", "") if isinstance(head, dict) else head] if x)
        metrics = [d.headline] + [m for m in d.metrics if m != d.headline]
        splits = ", ".join(f"{r}={s.split}" + (f"[{s.size}]" if s.size else "") for r, s in d.splits.items())
        table.add_row(d.name, str(d.version), d.type, d.dataset, splits, ", ".join(metrics), proto)
    _console().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every definition: schema, known task type, known dataset, backbones' fields."""
    from tips_bench.backbones.spec import all_backbone_specs
    from tips_bench.data.catalog import SYNTHETIC, dataset_entries
    from tips_bench.registry import load_definitions
    from tips_bench.tasks.base import TASK_TYPES, TaskDefinition, make_task

    problems = []
    specs = all_backbone_specs()
    for spec in specs:
        if spec.default_global not in ({"cls1", "cls2", "cls", "embedding", "mean"}):
            problems.append(f"backbone {spec.name}: unknown default_global '{spec.default_global}'")
    known = set(dataset_entries()) | set(SYNTHETIC)
    tasks = []
    for _, raw in sorted(load_definitions("tasks").items()):
        try:  # every file against its schema (top level, then its task type's protocol), all problems listed
            d = TaskDefinition.from_dict(raw)
            make_task(d)
        except TipsBenchError as exc:
            problems.append(str(exc))
            continue
        tasks.append(d)
        if d.dataset not in known:
            problems.append(f"task {d.name}: unknown dataset '{d.dataset}'")
        if d.headline not in d.metrics:
            problems.append(f"task {d.name}: headline '{d.headline}' is not among its metrics")
    for p in problems:
        print(f"problem: {p}")
    print(f"{len(specs)} backbones, {len(tasks)} tasks, {len(TASK_TYPES)} task types: "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def cmd_report(args: argparse.Namespace) -> int:
    from tips_bench import report, validate

    if args.plot:
        validate.check_output_dir(args.plot, "--plot")
    if args.html:
        validate.check_output_dir(args.html, "--html")
    frame = _store_frame(args)
    _print_table(frame, args.format, paper=not args.no_paper, all_metrics=args.all_metrics)
    marked = _mark_smoke_runs(frame)
    paper = report.load_paper_reference() if not args.no_paper else []
    if args.plot:
        paths = report.plot(marked, Path(args.plot), paper=paper)
        print(f"wrote {len(paths)} plots to {args.plot}")
    if args.html:
        from tips_bench.report_html import write_html_report

        metrics = None if args.all_metrics else _headline_columns(marked["task"]) or None
        page = write_html_report(marked, Path(args.html), results_path=_store(args.results).path, paper=paper,
                                 metrics=metrics)
        print(f"wrote {page}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tips_bench import report

    target, fmt = (args.csv, "csv") if args.csv else (args.parquet, "parquet") if args.parquet else (args.out, None)
    report.export_format(target, fmt)  # a bad suffix or an unwritable path fails before the store is read
    from tips_bench import validate

    validate.check_output_file(target, f"--{fmt or 'out'}")
    frame = _store_frame(args)
    path = report.export_leaderboard(_mark_smoke_runs(frame), Path(target), paper=None if not args.no_paper else [],
                                     fmt=fmt)
    print(f"wrote {path} ({report.export_format(path, fmt)})")
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    from tips_bench import suite
    from tips_bench.results import rows_frame

    opts = _run_options(args)
    if args.update:
        backbones = [suite.parse_backbone(b, False) for a in (args.backbone or []) for b in a.split(",") if b] \
            or list(suite.DEFAULT_BACKBONES)
        tasks = [t for a in args.task for t in a.split(",") if t] if args.task else suite.suite_tasks(args.suite)
        from tips_bench import validate
        from tips_bench.runner import run_grid

        validate.check_output_file(args.update, "--update")
        _preflight(args, backbones, tasks, opts)
        included = suite.included_bands(args.include, tasks) if args.include else []
        have = {(b.backbone, b.random_init) for b in included}
        measured = [b for b in backbones if b not in have]  # the included file's backbones are copied, not re-run
        _download_if_asked(args, backbones)
        _check_checkpoints(args, measured)
        runner = _runner(args)
        rows = run_grid(measured, tasks, list(range(args.seeds or 3)), opts, runner)
        suite.write_baseline(suite.bands_from_rows(rows) + included, args.update)
        print(f"wrote {args.update} from {len(rows)} rows over {args.seeds or 3} seeds"
              + (f" and {len(included)} bands of {args.include}" if included else ""))
        return 0
    bands = suite.read_baseline(args.baseline)
    cells = sorted({(b.backbone, b.random_init) for b in bands})
    _preflight(args, cells, sorted({b.task for b in bands}), opts)
    _download_if_asked(args, cells)
    _check_checkpoints(args, cells)
    runner = _runner(args)
    seeds = _seeds(args)
    rows = suite.run_for_baseline(bands, seeds, opts, runner)
    checks = suite.check_against(bands, rows_frame(rows))
    failed = [c for c in checks if not c.ok]
    for c in checks:
        b = c.band
        value = "missing" if c.value is None else f"{c.value:.4g}"
        mark = "ok  " if c.ok else "FAIL"
        print(f"{mark} {b.backbone}{'+random' if b.random_init else '':8} {b.task:18} {b.metric:12} {value:>9} "
              f"in [{b.low:.4g}, {b.high:.4g}]")
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tips_bench.data.catalog import data_root, dataset_entries

    table = Table(title=f"tips-bench datasets (data root: {data_root()})")
    for col in ("name", "splits", "expected at", "found", "description"):
        table.add_column(col)
    for name, e in sorted(dataset_entries().items()):
        path = data_root() / e.default_dirname
        table.add_row(name, ", ".join(e.splits), str(path), "yes" if path.exists() else "no", e.description)
    _console().print(table)
    print("Synthetic (built in, no download): synthetic_scenes, synthetic_objects, synthetic_pairs")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a task (its splits, options and sample keys) or a dataset (its layout, then every task reading it)."""
    from tips_bench.data.catalog import dataset_entries, dataset_root
    from tips_bench.data.readiness import task_problems, tasks_reading
    from tips_bench.registry import load_definitions
    from tips_bench.tasks.base import get_task_definition

    entries = dataset_entries()
    is_task = args.name in load_definitions("tasks")
    if not is_task and args.name not in entries:
        raise TipsBenchError(f"'{args.name}' is neither a task nor a dataset; run 'tips-bench tasks' or "
                             "'tips-bench data list'")
    tasks = [get_task_definition(args.name)] if is_task else tasks_reading(args.name)
    dataset = tasks[0].dataset if is_task else args.name
    if dataset not in entries:
        print(f"{args.name}: reads the built-in {dataset} (no download needed): ok")
        return 0
    entry = entries[dataset]
    if args.root:
        from tips_bench.validate import check_input_dir

        check_input_dir(args.root, "--root")
    root = dataset_root(dataset, args.root)
    layout = entry.check(root)
    failed = bool(layout)
    if layout:
        print(f"{dataset}: {len(layout)} layout problem(s) at {root}")
        for p in layout:
            print(f"  - {p}")
    else:
        print(f"{dataset}: layout at {root} is complete")
    for d in tasks:
        problems = task_problems(d, root)
        failed |= bool(problems)
        print(f"  task {d.name}: {'ready' if not problems else 'NOT ready'}")
        for p in problems:
            print(f"      - {p}")
    if failed:
        print(f"How to get it: {entry.how_to_get} ({entry.homepage}; licence: {entry.licence})")
    return 1 if failed else 0


def _default_workers() -> int:
    import os

    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


def add_run_args(p: argparse.ArgumentParser) -> None:
    from tips_bench.cli_args import add_backbone_args

    add_backbone_args(p, required=False, many=True)
    p.add_argument("--task", action="append", help="task name(s), comma-separated or repeated (default: all toy_*)")
    p.add_argument("--suite", default="toy", help="run every task of this suite when no --task is given "
                   "(toy: the default synthetic suite; toy-extended: adds the DPT probes)")
    p.add_argument("--limit", type=positive_int, help="use only the first N items of every split (smoke runs)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="probe seed (default: 0)")
    p.add_argument("--seeds", type=positive_int, help="run seeds 0..N-1 instead of --seed")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="images per backbone forward pass (default: 16)")
    p.add_argument("--num-workers", type=nonnegative_int, default=_default_workers(),
                   help="data-loading worker processes that decode and resize while the backbone runs "
                   f"(default here: {_default_workers()}: half the CPU cores, 0 = in process on 2 cores or fewer)")
    p.add_argument("--cache-dir", help="feature cache folder (default: $TIPS_BENCH_CACHE or ~/.cache/tips-bench)")
    p.add_argument("--results", help="results store (default: $TIPS_BENCH_RESULTS or results/runs.jsonl)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TIPS_BENCH_DATA or ~/tips-bench-data)")
    p.add_argument("--root", help="explicit root folder of the task's dataset")
    p.add_argument("--format", choices=("terminal", "markdown", "csv"), default="terminal", help="table format")
    p.add_argument("--no-paper", action="store_true", help="do not show the papers' numbers beside ours")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a protocol value of the task, e.g. --set probe.epochs=1 --set resolution=224 "
                   "(recorded in every result row under protocol.overrides)")
    p.add_argument("--mode", choices=("cached", "faithful"),
                   help="dense probes: 'cached' (default: one pass of the backbone, no augmentation) or 'faithful' "
                   "(the reference augmentation and schedule; see docs/tasks.md); recorded in every row")


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("run", help="evaluate backbones on tasks (no arguments: the built-in synthetic suite)",
                       formatter_class=fmt, description=(
                           "Evaluate backbones on tasks and append result rows with full provenance.\n\n"
                           "With no --backbone/--task it runs every toy_* task on the built-in synthetic world\n"
                           "with the no-download baselines (pixels, tips_s14+random) and the five mini TIPS backbones\n"
                           "pretrained on that world with the paper's recipes (mini_*, shipped). Examples:\n"
                           "  tips-bench run --backbone tips_l14 --task ade20k_seg --checkpoint ~/ckpt\n"
                           "  tips-bench run --backbone dinov2_b14 --random-init --task toy_seg,toy_depth --seeds 3\n"
                           "  tips-bench run --backbone tips_b14 --task imagenet_knn --limit 100   # smoke run\n"
                           "A backbone written NAME+random uses seeded random weights for that backbone only."))
    add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("selftest", help="run tasks on the oracle backbone and check each reaches its known optimum",
                       formatter_class=fmt, description=(
                           "Run tasks with the 'oracle' backbone, whose features encode the ground truth of\n"
                           "every view, and print each headline beside its known optimum (exit 1 if one falls\n"
                           "short). Default: the built-in toy suite. Paper tasks need their data:\n"
                           "  tips-bench selftest\n"
                           "  tips-bench selftest --task voc_seg,nyu_depth --data-root ~/tips-bench-data --limit 20"))
    p.add_argument("--task", action="append", help="task name(s), comma-separated or repeated")
    p.add_argument("--suite", default="toy", help="suite(s) to run when no --task is given (default: toy)")
    p.add_argument("--limit", type=positive_int, help="use only the first N items of every split")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a protocol value of every task")
    p.add_argument("--root", help="explicit root folder of the tasks' dataset")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TIPS_BENCH_DATA)")
    p.add_argument("--cache-dir", help="feature cache folder (default: $TIPS_BENCH_CACHE or "
                   "~/.cache/tips-bench/features)")
    p.add_argument("--device", default="cpu", help="torch device for the probes (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default: 16)")
    p.add_argument("--num-workers", type=nonnegative_int, default=_default_workers(),
                   help="data-loading worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("tasks", help="list every task with its dataset, metrics and protocol")
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("validate", help="check every backbone and task definition")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="print comparison tables (backbones x tasks) with the papers' numbers")
    p.add_argument("--results", help="results store (default: $TIPS_BENCH_RESULTS or results/runs.jsonl)")
    p.add_argument("--format", choices=("terminal", "markdown", "csv"), default="terminal")
    p.add_argument("--task", action="append", help="only these tasks")
    p.add_argument("--plot", metavar="DIR", help="also save one PNG chart per task/metric into DIR")
    p.add_argument("--html", metavar="DIR", help="also write DIR/index.html: one self-contained page (no network "
                   "needed) with the table (ours, paper, Δ, protocol mode), a chart per task and example panels "
                   "of the dense tasks")
    p.add_argument("--all-metrics", action="store_true", help="one column per metric (default: headline metrics)")
    p.add_argument("--no-paper", action="store_true", help="do not show the papers' numbers")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write the leaderboard (CSV or Parquet) with full provenance",
                       formatter_class=fmt, description=(
                           "Write one line per (backbone, task, task version, metric): mean, std and seeds, the\n"
                           "paper's value and Δ, protocol mode and the newest row's provenance. Written atomically.\n"
                           "  tips-bench export --csv leaderboard.csv\n"
                           "  tips-bench export --parquet leaderboard.parquet\n"
                           "  tips-bench export --out board.parquet        # format from the suffix"))
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--csv", metavar="FILE", help="write CSV")
    out.add_argument("--parquet", metavar="FILE", help="write Parquet (pyarrow)")
    out.add_argument("--out", metavar="FILE", help="write CSV or Parquet, chosen by the suffix (.csv, .parquet)")
    p.add_argument("--task", action="append", help="only these tasks")
    p.add_argument("--results", help="results store (default: $TIPS_BENCH_RESULTS or results/runs.jsonl)")
    p.add_argument("--no-paper", action="store_true", help="leave out the papers' numbers")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("regress", help="fail (exit 1) when a probe score leaves its tolerance band",
                       formatter_class=fmt, description=(
                           "Run the cells of a baseline and check every score against its band\n"
                           "(mean ± max(k·std over seeds, floor), stored in the baseline). Exit 1 on any failure.\n"
                           "  tips-bench regress --baseline results/ci_baseline.csv\n"
                           "  tips-bench regress --update results/ci_baseline.csv --seeds 3   # (re)build bands\n"
                           "  tips-bench regress --update results/ci_baseline.csv --seeds 3 \\\n"
                           "      --include results/mini_study_bands.csv   # mini_* bands: pretraining-seed spread"))
    add_run_args(p)
    p.add_argument("--baseline", default="results/ci_baseline.csv", help="baseline CSV with bands")
    p.add_argument("--update", metavar="CSV", help="instead of checking, run --seeds seeds and write bands to CSV")
    p.add_argument("--include", metavar="CSV", help="with --update: copy the bands of this CSV (same format) for the "
                   "tasks being updated, and do not re-run its backbones, e.g. results/mini_study_bands.csv, whose "
                   "mini_* bands come from the spread over pretraining seeds")
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser("data", help="list datasets, or check one's layout")
    dsub = p.add_subparsers(dest="data_command", metavar="{list,check}", required=True)
    q = dsub.add_parser("list", help="every dataset, where it is expected and whether it is found")
    q.set_defaults(func=cmd_data_list)
    q = dsub.add_parser("check", help="check that a task (or every task of a dataset) will find its data; say what "
                        "is missing and how to get it")
    q.add_argument("name", help="task name (its splits, dataset options and sample keys are checked) or dataset "
                   "name (its layout, then every task that reads it); see 'tips-bench tasks' / 'data list'")
    q.add_argument("--root", help="dataset folder (default: data root / the official folder name)")
    q.set_defaults(func=cmd_data_check)
