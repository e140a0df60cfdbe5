"""Run (backbone, task, seed) cells: fill the feature cache, evaluate, append result rows.

The backbone is loaded only when a cache entry is missing; everything after the fill step
reads the cache. Every row carries the full protocol and provenance.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tips_bench.backbones import load_backbone, resolve_backbone_spec
from tips_bench.backbones.base import Backbone
from tips_bench.backbones.checkpoints import weights_identity
from tips_bench.backbones.spec import BackboneSpec, get_backbone_spec
from tips_bench.cache import CacheEntry, FeatureCache, shard_size_for
from tips_bench.data.catalog import open_dataset
from tips_bench.distributed import DistInfo
from tips_bench.errors import CapabilityError, TipsBenchError
from tips_bench.extract import ViewEncoder, bytes_per_item, produce_batches, resolve_layers
from tips_bench.frames import Frame
from tips_bench.precision import resolve_precision
from tips_bench.results import ResultRow, ResultsStore, capture_provenance, config_hash, new_run_id, utc_now
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, get_task_definition, make_task

#: Bump when extraction or probe code changes results for an unchanged protocol.
PIPELINE_VERSION = 1


@dataclass
class RunOptions:
    """Everything a run needs besides the (backbone, task) pair."""

    checkpoint: str | None = None
    random_init: bool = False
    seed: int = 0
    limit: int | None = None
    device: str = "cpu"
    batch_size: int = 16
    num_workers: int = 0
    progress: bool = True
    num_heads: int | None = None
    text_num_heads: int | None = None
    arch: str | None = None
    init_seed: int = 0
    compile: bool = False
    precision: str | None = None  # fp32 / bf16 / fp16; None = bf16 on CUDA, fp32 on CPU
    overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def backbone_label(name: str, random_init: bool) -> str:
    """The name a result row carries: random-init runs are kept apart from trained weights."""
    return f"{name}+random" if random_init else name


class LazyBackbone:
    """Loads the backbone on first use only (cache hits never load it) and counts forward passes."""

    def __init__(self, spec: BackboneSpec, opts: RunOptions):
        self.spec, self.opts = spec, opts
        self._backbone: Backbone | None = None
        self.loads = 0
        self.bind: list[str] | None = None  # class names for backbones that map prompts to classes (oracle)

    def get(self) -> Backbone:
        if self._backbone is None:
            o = self.opts
            self._backbone = load_backbone(self.spec.name, checkpoint=o.checkpoint, random_init=o.random_init,
                                           device=o.device, num_heads=o.num_heads, text_num_heads=o.text_num_heads,
                                           arch=o.arch, seed=o.init_seed)
            if o.compile and hasattr(self._backbone, "compile"):
                self._backbone.compile()
            if self.bind is not None and hasattr(self._backbone, "bind_classes"):
                self._backbone.bind_classes(self.bind)
            self.loads += 1
        return self._backbone

    @property
    def loaded(self) -> bool:
        return self._backbone is not None


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dataset_fingerprint(ds: Any) -> dict[str, Any]:
    info = getattr(ds, "info", None)
    fingerprint = getattr(ds, "fingerprint", None)
    return {"name": getattr(ds, "name", type(ds).__name__), "split": getattr(ds, "split", ""), "len": len(ds),
            "root": str(getattr(ds, "root", "")), "notes": getattr(info, "notes", ""),
            "seed": getattr(ds, "seed", None), "image_size": getattr(ds, "image_size", None),
            "views": fingerprint() if callable(fingerprint) else None}


class Runner:
    """Runs cells and appends their rows to a results store."""

    def __init__(self, store: ResultsStore | None = None, cache: FeatureCache | None = None,
                 dist: DistInfo | None = None):
        self.store = store
        self.cache = cache or FeatureCache()
        self.dist = dist or DistInfo()
        self.last_forward_items = 0

    def run(self, backbone: str, task_name: str, opts: RunOptions) -> list[ResultRow]:
        start = time.perf_counter()
        spec = resolve_backbone_spec(get_backbone_spec(backbone), opts.checkpoint, opts.arch, opts.random_init)
        task = make_task(get_task_definition(task_name).with_overrides(smoke_overrides(task_name, opts)))
        task.check_backbone(spec)
        lazy = LazyBackbone(spec, opts)
        frame = task.frame(spec)
        datasets = {role: self.open_split(task, role, split, frame, opts) for role, split in task.d.splits.items()}
        identity = weights_identity(spec, opts.checkpoint, opts.random_init, opts.init_seed,
                                    {"heads": opts.num_heads, "text_heads": opts.text_num_heads, "arch": opts.arch,
                                     # features cached before openclip read activation and precision from the file
                                     # (GELU, fp16 text) are stale: a new identity for its files
                                     "from_file": 2 if spec.architecture.get("from_file") else None})
        if spec.can("ground_truth"):  # the oracle's text side depends on the class names it is bound to
            names = _class_names(datasets.get("eval") or next(iter(datasets.values())))
            identity = f"{identity}:{config_hash(names)}"
            lazy.bind = names
        self.last_forward_items = 0
        entries, stats = {}, _FillStats()
        for role, ds in datasets.items():
            request = build_request(task, role, spec)
            entries[role] = self.extract(ds, request, frame, lazy, identity, opts, f"{task.d.name}/{role}", stats)
        if not self.dist.is_main:  # other ranks only help fill the cache; rank 0 evaluates and writes the rows
            return []
        first = next(iter(entries.values()))
        layer_names = sorted((n for n in first.array_names() if n.startswith(("patches_", "a_patches_"))),
                             key=lambda s: int(s.rsplit("_", 1)[1]))
        global_name = task.d.p("global") or spec.default_global
        probe_batch = int((task.d.p("probe") or {}).get("batch_size", 8))

        def extract(ds: Any, request: FeatureRequest, view_frame: Frame, desc: str) -> CacheEntry:
            return self.extract(ds, request, view_frame, lazy, identity, opts, desc, stats)

        ctx = EvalContext(entries=entries, datasets=datasets, backbone=spec, global_name=global_name,
                          layer_names=layer_names, encode_texts=self._text_encoder(lazy, identity),
                          seed=opts.seed, device=opts.device, batch_size=probe_batch, progress=opts.progress,
                          frame=frame, load_backbone=lazy.get, extra={"extract": extract})
        metrics = task.evaluate(ctx)
        self.last_forward_items += int(ctx.timings.get("online_forward_views", 0))
        wall = time.perf_counter() - start
        rows = self._rows(task, spec, opts, metrics, ctx, identity, wall, stats, datasets)
        if self.store is not None:
            self.store.append(rows)
            self._save_examples(rows, task, ctx)
        return rows

    def _save_examples(self, rows: list[ResultRow], task: Task, ctx: EvalContext) -> None:
        """A few evaluation images with ground truth and prediction, for ``report --html``'s dense panels."""
        examples = ctx.extra.get("examples")
        if not examples or not rows:
            return
        from tips_bench.artifacts import save_examples

        ds = ctx.datasets["eval"]
        items = [{**{k: v for k, v in ex.items() if k != "index"}, "image": np.asarray(ds[ex["index"]]["image"])}
                 for ex in examples]
        save_examples(self.store.path, rows[0].run_id, rows[0].backbone, task.d.name, items)

    def open_split(self, task: Task, role: str, split: Any, frame: Frame, opts: RunOptions) -> Any:
        """The dataset of one of a task's roles (synthetic ones rendered at the frame's size), limited."""
        render = task.d.p("render_size") or frame.square
        ds = open_dataset(task.d.dataset, split.split, size=split.size, root=opts.extra.get("root"),
                          image_size=tuple(render), seed=int(task.d.p("data_seed", 0)),
                          options=task.d.dataset_options)
        return _Limited(ds, opts.limit) if opts.limit else ds

    def extract(self, ds: Any, request: FeatureRequest, frame: Frame, lazy: LazyBackbone, identity: str,
                opts: RunOptions, desc: str, stats: _FillStats | None = None) -> CacheEntry:
        """The cache entry of a dataset's features under a frame and request, filled if it is missing."""
        spec = lazy.spec
        fields = {"weights": identity, "backbone": spec.name, "frame": frame.describe(), "request": asdict(request),
                  "precision": resolve_precision(opts.precision, opts.device),
                  "normalization": [spec.mean, spec.std], "pos_embed": spec.pos_embed_interpolation,
                  "dataset": _dataset_fingerprint(ds), "pipeline": PIPELINE_VERSION}
        entry = self.cache.entry(fields)
        t0 = time.perf_counter()
        done = self._fill(entry, lazy, ds, frame, request, opts, desc)
        if stats is not None:
            stats.add(entry, done, time.perf_counter() - t0)
        entry.add_user(desc.split("/")[0])
        return entry

    def _fill(self, entry: CacheEntry, lazy: LazyBackbone, ds: Any, frame: Frame, request: FeatureRequest,
              opts: RunOptions, desc: str) -> int:
        if entry.complete():
            return 0
        backbone = lazy.get()
        per_item = _bytes_per_item(backbone, ds, frame, request)
        entry.prepare(len(ds), shard_size_for(per_item))
        entry.check_free_space(entry.estimate_fill_bytes(per_item))
        missing = sum(s.stop - s.start for s in entry.missing_shards())
        bar = tqdm(total=missing, desc=f"extract {desc}", unit="img", disable=not opts.progress, leave=False)
        encoder = ViewEncoder(backbone, frame, request, opts.batch_size,
                              precision=resolve_precision(opts.precision, opts.device))

        def produce(lo: int, hi: int):
            for batch in produce_batches(backbone, ds, lo, hi, frame, request, opts.batch_size, opts.num_workers,
                                         counter=encoder):
                bar.update(len(next(iter(batch.values()))))
                yield batch

        try:
            return entry.fill(produce, progress=opts.progress)
        finally:
            self.last_forward_items += encoder.forward_items
            bar.close()

    def _text_encoder(self, lazy: LazyBackbone, identity: str):
        def encode(texts: list[str]) -> np.ndarray:
            entry = self.cache.entry({"weights": identity, "backbone": lazy.spec.name, "texts": config_hash(texts),
                                      "count": len(texts), "kind": "text", "pipeline": PIPELINE_VERSION})
            if not entry.complete():
                backbone = lazy.get()
                entry.prepare(len(texts), max(1, len(texts)))

                step = 1024 if backbone.device.type == "cuda" else 256  # prompts per forward pass

                def produce(lo: int, hi: int):
                    for b in range(lo, hi, step):
                        emb = backbone.encode_text(texts[b : min(hi, b + step)])
                        yield {"text": emb.float().cpu().numpy()}

                entry.fill(produce, progress=lazy.opts.progress)
            return entry.read("text")

        return encode

    def _rows(self, task: Task, spec: BackboneSpec, opts: RunOptions, metrics: dict[str, float], ctx: EvalContext,
              identity: str, wall: float, stats: _FillStats, datasets: dict) -> list[ResultRow]:
        prov = capture_provenance()
        d = task.d
        protocol = {"task_version": d.version, "type": d.type, "dataset": d.dataset,
                    "dataset_options": d.dataset_options,
                    "splits": {r: asdict(s) for r, s in d.splits.items()}, **d.protocol,
                    "frame_resolved": ctx.frame.describe() if ctx.frame else None,
                    "resolution_used": list(task.resolution(spec)), "global_token": ctx.global_name,
                    "layers_cached": ctx.layer_names, "limit": opts.limit, "pipeline": PIPELINE_VERSION,
                    "precision": resolve_precision(opts.precision, opts.device)}
        # the configuration alone (no timings), so that identical runs share one hash
        cfg = config_hash({"protocol": protocol, "weights": identity, "seed": opts.seed})
        protocol["timings"] = ctx.timings
        run_id, stamp = new_run_id(), utc_now()
        eval_split = d.splits.get("eval", next(iter(d.splits.values()))).split
        n_eval = len(datasets.get("eval", next(iter(datasets.values()))))
        rows = []
        for metric, value in metrics.items():
            rows.append(ResultRow(
                run_id=run_id, timestamp=stamp, backbone=backbone_label(spec.name, opts.random_init),
                backbone_family=spec.family, task=d.name, task_version=d.version, dataset=d.dataset, split=eval_split,
                metric=metric, value=float(value), higher_is_better=d.higher_is_better.get(metric, True),
                seed=opts.seed, protocol=protocol, config_hash=cfg,
                checkpoint_hash="" if opts.random_init else identity, code_version=prov["code_version"],
                packages=prov["packages"], device=prov["device"] if opts.device == "cpu" else opts.device,
                wall_time_s=wall, images_per_s=stats.rate, peak_memory_mb=_peak_memory_mb(opts.device),
                num_samples=n_eval, limit=opts.limit,
            ))
        return rows


class _FillStats:
    """Images extracted (or read from the cache) and the time their extraction took, for images/s."""

    def __init__(self) -> None:
        self.images, self.seconds = 0, 0.0

    def add(self, entry: CacheEntry, done: int, seconds: float) -> None:
        if done:
            self.images += done
            self.seconds += seconds
            entry.annotate(fill_images_per_s=done / max(seconds, 1e-9))
        else:  # features came from the cache: report the rate measured when they were extracted
            rate = (entry.meta() or {}).get("fill_images_per_s", 0.0)
            self.images += entry.num_items
            self.seconds += entry.num_items / rate if rate else 0.0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _class_names(ds: Any) -> list[str]:
    info = getattr(ds, "info", None)
    names = (info.extra or {}).get("prompt_names") if info is not None else None
    return list(names or (info.class_names if info is not None else ()))


def _bytes_per_item(backbone: Backbone, ds: Any, frame: Frame, request: FeatureRequest) -> int:
    """Cache bytes of one item, measured on the first item's views (sizes shards to ~64 MB)."""
    if request.pair:
        h, w = frame.fitted_size(*frame.square)
        views, pixels = 2.0, 0
    else:
        sample = ds[0]
        image = np.asarray(sample["image"])
        resized = frame.resized_size(*image.shape[:2])
        boxes = frame.views(*resized)
        h, w = frame.fitted_size(boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
        views, pixels = float(len(boxes)), image.shape[0] * image.shape[1]
    n_layers = len(resolve_layers(backbone, request.layers)) + (1 if request.text_dense else 0)
    grid = (h // backbone.patch_size, w // backbone.patch_size)
    return bytes_per_item(backbone.embed_dim, grid, max(n_layers, 1), views, pixels)


def build_request(task: Task, role: str, spec: BackboneSpec) -> FeatureRequest:
    """The task's request for a role, or the ``cache:`` request its definition declares (so that tasks on the
    same images, e.g. segmentation, depth and normals of one split, fill and share a single entry), with the
    tapped-block norm resolved for the backbone and ground truth for backbones that read it."""
    own = task.request(role)
    shared = task.d.p("cache")
    norm = task.d.p("layer_norm", True)
    if shared:
        text_dense = shared.get("text_dense", False)
        own = replace(own, layers=_layers(shared.get("layers", "last")), globals=bool(shared.get("globals", True)),
                      text_dense=spec.can("text") if text_dense == "auto" else bool(text_dense),
                      targets=tuple(shared.get("targets", ())), pair=bool(shared.get("pair", False)),
                      max_points=int(shared.get("max_points", 64)))
        norm = shared.get("layer_norm", True)
    layer_norm = spec.dense_layer_norm if norm == "backbone" else bool(norm)
    return replace(own, layers=_layers(own.layers), layer_norm=layer_norm, oracle=spec.can("ground_truth"))


def _layers(value: Any) -> str | tuple[int, ...]:
    return value if isinstance(value, str) else tuple(int(v) for v in value)


class _Limited:
    """The first ``limit`` items of a dataset (``--limit`` smoke runs)."""

    def __init__(self, ds: Any, limit: int):
        self._ds, self._n = ds, min(limit, len(ds))
        self.info, self.name, self.split = getattr(ds, "info", None), getattr(ds, "name", ""), getattr(ds, "split", "")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._ds[i % self._n]

    def __getattr__(self, name: str):
        return getattr(self._ds, name)


#: Prompt templates a ``--limit`` smoke run encodes per class (CLIP's 80 x 1,000 ImageNet classes take long).
SMOKE_TEMPLATES = 1


def smoke_overrides(task: str, opts: RunOptions) -> dict[str, Any]:
    """The run's overrides, plus ``max_templates`` for ``--limit`` smoke runs of prompt-ensembling tasks (recorded
    in the row's overrides like any other, so the row says it used fewer templates)."""
    overrides = dict(opts.overrides)
    if opts.limit and "max_templates" in get_task_definition(task).protocol and "max_templates" not in overrides:
        overrides["max_templates"] = SMOKE_TEMPLATES
    return overrides


def applicable_overrides(task: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` pairs whose top-level key the task's protocol has."""
    protocol = get_task_definition(task).protocol
    return {k: v for k, v in overrides.items() if k.split(".")[0] in protocol}


def overrides_per_task(tasks: Sequence[str], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One ``--set`` list serves several tasks: each takes the keys its protocol has; a key no task has is an
    error (a typo must not pass silently)."""
    per_task = {task: applicable_overrides(task, overrides) for task in tasks}
    unused = [k for k in overrides if not any(k in o for o in per_task.values())]
    if unused:
        raise TipsBenchError(f"--set {unused[0]} is not a protocol key of {', '.join(tasks)}; see 'tips-bench tasks' "
                             "and docs/tasks.md for each task type's keys")
    return per_task


def run_grid(backbones: Sequence[tuple[str, bool]], tasks: Sequence[str], seeds: Sequence[int], opts: RunOptions,
             runner: Runner) -> list[ResultRow]:
    """Run every (backbone, random_init) x task x seed cell; a cell a backbone cannot do is skipped."""

    per_task = overrides_per_task(tasks, opts.overrides)
    rows: list[ResultRow] = []
    for name, random_init in backbones:
        for task in tasks:
            for seed in seeds:
                cell = RunOptions(**{**asdict(opts), "random_init": random_init, "seed": seed,
                                     "overrides": per_task[task]})
                try:
                    rows += runner.run(name, task, cell)
                except CapabilityError as exc:
                    if len(backbones) * len(tasks) == 1:
                        raise
                    tqdm.write(f"skipped {backbone_label(name, random_init)} on {task}: {exc}")
    return rows
