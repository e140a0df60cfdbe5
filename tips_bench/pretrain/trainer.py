"""The deterministic pretraining loop behind ``tips-bench pretrain``.

Everything is a function of the configuration: the world stream (:mod:`world`), the tokenizer
(trained on world captions), the initial weights (``torch.manual_seed(seed)``), the masks and crops
(a seeded generator), with deterministic algorithms and a fixed thread count. ``--minutes`` picks
the step count from the speed of the first steps (which do not depend on it: they are in the
learning-rate warm-up), so the recorded ``--steps`` rebuilds the same run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tips_bench.backbones.tips_text import MAX_LEN, TipsTokenizer
from tips_bench.errors import TipsBenchError
from tips_bench.pretrain import losses as L
from tips_bench.pretrain.export import sha256, text_arrays, vision_arrays, write_npz, write_record
from tips_bench.pretrain.models import CaptionDecoder, ImageTower, ProjectionHead, TowerSizes, text_tower
from tips_bench.pretrain.recipes import Recipe, get_recipe
from tips_bench.pretrain.tokenizer import train_tokenizer
from tips_bench.pretrain.world import (
    PRETRAIN_SPLIT,
    TOKENIZER_SPLIT,
    WorldBatch,
    WorldStream,
    batch_loader,
    caption_corpus,
)

#: Steps when neither --steps nor --minutes is given.
DEFAULT_STEPS = 400
#: Steps timed (after the first) to turn --minutes into a step count; all inside the warm-up.
CALIBRATION_STEPS = 4


@dataclass(frozen=True)
class PretrainConfig:
    """Every choice of a pretraining run (all recorded in ``recipe.json``)."""

    recipe: str
    seed: int = 0
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    sizes: TowerSizes = field(default_factory=TowerSizes)
    vocab_size: int = 256
    tokenizer_scenes: int = 3000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 3.0
    threads: int = 1
    workers: int = 0
    device: str = "cpu"
    # Self-distillation (tips_full, cap_mim): iBOT masking, DINO local crops, EMA teacher.
    local_crops: int = 2
    local_size: int = 56
    local_scale: tuple[float, float] = (0.15, 0.45)
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    teacher_momentum: float = 0.99
    center_momentum: float = 0.9

    def check(self) -> None:
        """Raise a one-sentence TipsBenchError for any invalid value."""
        get_recipe(self.recipe)
        s = self.sizes
        problems = [
            (self.steps is not None and self.steps < 1, f"--steps {self.steps} must be at least 1"),
            (self.minutes is not None and not self.minutes > 0, f"--minutes {self.minutes} must be positive"),
            (self.batch_size < 2, f"--batch-size {self.batch_size} must be at least 2 (contrastive pairs)"),
            (s.image_size % s.patch_size != 0 or s.image_size < s.patch_size,
             f"--image-size {s.image_size} must be a positive multiple of the patch size {s.patch_size}"),
            (self.local_size % s.patch_size != 0 or not s.patch_size <= self.local_size <= s.image_size,
             f"local crop size {self.local_size} must be a multiple of {s.patch_size} up to --image-size"),
            (s.width % s.heads != 0 or s.width % s.text_heads != 0 or s.width % 2 != 0,
             f"--width {s.width} must be even and divisible by the head counts ({s.heads}, {s.text_heads})"),
            (s.depth < 1 or s.text_depth < 1, "--depth and --text-depth must be at least 1"),
            (self.threads < 1, f"--threads {self.threads} must be at least 1"),
            (self.workers < 0, f"--workers {self.workers} must be 0 or more"),
            (self.lr <= 0, f"--lr {self.lr} must be positive"),
            (self.tokenizer_scenes < 10, "the tokenizer needs at least 10 scenes"),
            (not (self.device == "cpu" or self.device.startswith("cuda")),
             f"--device {self.device} is not cpu or cuda[:N]"),
        ]
        for bad, message in problems:
            if bad:
                raise TipsBenchError(message)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TipsBenchError(f"--device {self.device} was asked for but torch sees no CUDA device; "
                                 "use --device cpu")


def file_prefix(recipe: str) -> str:
    """Files are named after the backbone that loads them: ``mini_<recipe>_vision.npz`` ..."""
    return f"mini_{recipe}"


def rebuild_command(config: PretrainConfig, out: str) -> str | None:
    """The canonical command that rebuilds this run (fixed steps, every non-default option), or None
    when the configuration uses a value the command line cannot set (API-only settings)."""
    default = PretrainConfig(recipe=config.recipe)
    cli_sizes = ("image_size", "width", "depth", "heads", "text_depth")
    hidden = [f.name for f in fields(config) if f.name not in (
        "recipe", "seed", "steps", "minutes", "batch_size", "sizes", "vocab_size", "tokenizer_scenes", "lr",
        "threads", "workers", "device", "local_size") and getattr(config, f.name) != getattr(default, f.name)]
    hidden += [f.name for f in fields(config.sizes) if f.name not in (*cli_sizes, "text_heads")
               and getattr(config.sizes, f.name) != getattr(default.sizes, f.name)]
    if hidden or config.sizes.text_heads != config.sizes.heads:
        return None
    parts = ["tips-bench", "pretrain", "--recipe", config.recipe, "--seed", str(config.seed),
             "--steps", str(config.steps), "--threads", str(config.threads)]
    options = {"batch_size": "--batch-size", "vocab_size": "--vocab-size", "lr": "--lr", "device": "--device",
               "local_size": "--local-size", "tokenizer_scenes": "--tokenizer-scenes"}
    for name, flag in options.items():
        if getattr(config, name) != getattr(default, name):
            parts += [flag, str(getattr(config, name))]
    for name in cli_sizes:
        value = getattr(config.sizes, name)
        default_value = max(1, config.sizes.width // 64) if name == "heads" else getattr(default.sizes, name)
        if value != default_value:
            parts += ["--" + name.replace("_", "-"), str(value)]
    return " ".join([*parts, "--out", out])


@contextlib.contextmanager
def deterministic(threads: int, device: str) -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration; previous settings restored."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    # CUDA needs CUBLAS_WORKSPACE_CONFIG for strict mode; there runs are repeatable only to tolerance.
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])


def learning_rate(config: PretrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``total`` (the warm-up does not depend on it)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))


def teacher_momentum(config: PretrainConfig, step: int, total: int) -> float:
    """Constant in the warm-up, then cosine from the base momentum to 1 (DINO's schedule)."""
    if step < config.warmup_steps:
        return config.teacher_momentum
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 1 - (1 - config.teacher_momentum) * 0.5 * (1 + math.cos(math.pi * progress))


class Models(torch.nn.Module):
    """Every trained module of a recipe (absent parts are None) and the learned temperature."""

    def __init__(self, recipe: type[Recipe], sizes: TowerSizes, vocab_size: int):
        super().__init__()
        self.image = ImageTower(sizes)
        self.text = text_tower(vocab_size, sizes) if recipe.has_text_tower() else None
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))) if recipe.contrast else None
        self.head = ProjectionHead(sizes) if recipe.self_distillation else None
        self.decoder = CaptionDecoder(vocab_size, MAX_LEN + 1, sizes) if recipe.caption else None


def _param_groups(models: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in models.named_parameters():
        (decay if p.ndim >= 2 and "pos" not in name and "token" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Encoder:
    """Captions -> (ids, paddings, lengths) tensors with the evaluation tokenizer, cut to the longest row."""

    def __init__(self, model_file: Path, device: str):
        self.tokenizer, self.device = TipsTokenizer(model_file), device

    def __call__(self, texts: list[str], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, paddings = self.tokenizer(texts)
        lengths = (paddings == 0).sum(1)
        width = min(MAX_LEN, int(lengths.max()) + extra)
        ids, paddings = ids[:, :width], paddings[:, :width]
        if extra and width < int(lengths.max()) + extra:  # room for the end token of a 64-token caption
            ids = np.pad(ids, ((0, 0), (0, extra)))
            paddings = np.pad(paddings, ((0, 0), (0, extra)), constant_values=1)
        return (torch.from_numpy(ids).to(self.device), torch.from_numpy(paddings).to(self.device),
                torch.from_numpy(lengths).to(self.device))


def random_masks(batch: int, grid: int, config: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    """iBOT-style masks (B, grid, grid): a share of the images get a random ratio of their patches masked."""
    n = grid * grid
    masked_image = torch.rand(batch, generator=generator) < config.mask_probability
    lo, hi = config.mask_ratio
    counts = (torch.round((lo + (hi - lo) * torch.rand(batch, generator=generator)) * n)).long()
    ranks = torch.rand(batch, n, generator=generator).argsort(1).argsort(1)
    mask = (ranks < counts[:, None]) & masked_image[:, None]
    return mask.view(batch, grid, grid)


def local_crops(images: torch.Tensor, config: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    """``local_crops`` random-resized crops per image, (crops x B, 3, s, s), crop-major order."""
    b, _, h, w = images.shape
    k, size = config.local_crops, config.local_size
    lo, hi = config.local_scale
    area = (lo + (hi - lo) * torch.rand(k, b, generator=generator)) * h * w
    ratio = torch.exp((torch.rand(k, b, generator=generator) * 2 - 1) * math.log(4 / 3))
    ch = (area / ratio).sqrt().round().clamp(1, h).long()
    cw = (area * ratio).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(k, b, generator=generator) * (h - ch + 1)).long()
    x0 = (torch.rand(k, b, generator=generator) * (w - cw + 1)).long()
    out = []
    for j in range(k):
        for i in range(b):
            crop = images[i : i + 1, :, y0[j, i] : y0[j, i] + ch[j, i], x0[j, i] : x0[j, i] + cw[j, i]]
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


class _Step:
    """One recipe's loss computation; holds the EMA teacher and the centres."""

    def __init__(self, recipe: type[Recipe], models: Models, config: PretrainConfig, encode: _Encoder):
        self.recipe, self.models, self.config, self.encode = recipe, models, config, encode
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.teacher = self.teacher_head = None
        if recipe.self_distillation:
            self.teacher = copy.deepcopy(models.image).requires_grad_(False)
            self.teacher_head = copy.deepcopy(models.head).requires_grad_(False)
            k = config.sizes.prototypes
            self.center_cls = torch.zeros(1, k, device=config.device)
            self.center_patch = torch.zeros(1, k, device=config.device)

    def losses(self, batch: WorldBatch) -> dict[str, torch.Tensor]:
        c, m, device = self.config, self.models, self.config.device
        images = batch.images.to(device)
        mask = None
        if self.recipe.self_distillation:
            mask = random_masks(len(images), c.sizes.grid, c, self.generator).to(device)
        tokens = m.image(images, mask)
        out: dict[str, torch.Tensor] = {}
        if self.recipe.contrast:
            texts = {"short": batch.short, "long": batch.long}
            embedded = {kind: m.text(*self.encode(texts[kind])[:2]) for kind in {k for _, k in self.recipe.contrast}}
            terms = [L.contrastive_loss(tokens[:, index], embedded[kind], m.log_scale)
                     for index, kind in self.recipe.contrast]
            out["clip"] = sum(terms) / len(terms)
        if self.recipe.self_distillation:
            out.update(self._self_distillation(images, tokens, mask))
        if self.recipe.caption:
            ids, _, lengths = self.encode(batch.long, extra=1)
            out["caption"] = L.caption_loss(m.decoder(ids, tokens[:, 2:]), ids, lengths)
        return out

    def _self_distillation(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        c, m = self.config, self.models
        with torch.no_grad():
            t_tokens = self.teacher(images)
            t_cls, t_patch = self.teacher_head(t_tokens[:, 0]), self.teacher_head(t_tokens[:, 2:])
            target_cls = L.teacher_targets(t_cls, self.center_cls, c.teacher_temperature)
            target_patch = L.teacher_targets(t_patch, self.center_patch, c.teacher_temperature)
        crops = local_crops(images, c, self.generator)
        s_local = m.head(m.image(crops)[:, 0]).view(c.local_crops, len(images), -1)
        dino = L.distillation_loss(s_local, target_cls[None], c.student_temperature).mean()
        s_patch = m.head(tokens[:, 2:])
        ibot = L.masked_patch_loss(s_patch, target_patch, mask.flatten(1), c.student_temperature)
        L.update_center(self.center_cls, t_cls, c.center_momentum)
        L.update_center(self.center_patch, t_patch, c.center_momentum)
        return {"dino": dino, "ibot": ibot}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        if self.teacher is None:
            return
        for student, teacher in ((self.models.image, self.teacher), (self.models.head, self.teacher_head)):
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


def _versions() -> dict[str, str]:
    import sentencepiece
    import timm

    from tips_bench import __version__

    return {"tips_bench": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "timm": timm.__version__, "sentencepiece": sentencepiece.__version__,
            "python": platform.python_version()}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TipsBenchError(f"--out {out} is a file; pass a folder (it is created if missing)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TipsBenchError(f"--out {out} already holds files; pass a new or empty folder, or add --overwrite")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (replacing an old one only now, when all files exist)."""
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


@dataclass
class _Progress:
    losses: dict[str, list[float]] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)

    def add(self, step: int, values: dict[str, float], every: int) -> None:
        for k, v in values.items():
            self.losses.setdefault(k, []).append(v)
        if step % every == 0:
            self.curve.append({"step": step, **{k: round(v, 5) for k, v in values.items()}})

    def final(self, window: int = 20) -> dict[str, float]:
        return {k: round(float(np.mean(v[-window:])), 5) for k, v in self.losses.items()}


def pretrain(config: PretrainConfig, out: str | Path, overwrite: bool = False, progress: bool = True
             ) -> dict[str, Any]:
    """Train ``config.recipe`` and write ``out/`` (vision, text, tokenizer, recipe.json); returns the record."""
    config.check()
    recipe = get_recipe(config.recipe)
    out = Path(out)
    _prepare_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = file_prefix(recipe.name)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with deterministic(config.threads, config.device):
            config, models, step_fn, report = _train(config, recipe, tmp, progress)
        files = {f"{prefix}_vision.npz": vision_arrays(models.image)}
        if models.text is not None:
            temperature = float(1.0 / models.log_scale.detach().exp().clamp(max=L.MAX_LOGIT_SCALE))
            files[f"{prefix}_text.npz"] = text_arrays(models.text, temperature)
        for name, arrays in files.items():
            write_npz(tmp / name, arrays)
        record = {
            "name": prefix, "recipe": recipe.name, "summary": recipe.summary, "seed": config.seed,
            "steps": config.steps, "batch_size": config.batch_size, "images_seen": config.steps * config.batch_size,
            "world_split": PRETRAIN_SPLIT, "tokenizer_split": TOKENIZER_SPLIT,
            "threads": config.threads, "device": config.device, "cpu": _cpu_name(),
            "train_seconds": round(report["train_seconds"], 1),
            # CPU time of this process: the wall time on an idle machine (workers' rendering not included)
            "train_cpu_seconds": round(report["train_cpu_seconds"], 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "wall_seconds": round(time.perf_counter() - started, 1),
            "steps_per_s": round(config.steps / max(report["train_seconds"], 1e-9), 3),
            "versions": _versions(), "platform": platform.platform(),
            "command": rebuild_command(config, str(out)),
            "final_losses": report["final_losses"], "loss_curve": report["curve"],
            "config": _config_dict(config),
            "files": {name: sha256(tmp / name) for name in sorted(p.name for p in tmp.iterdir())},
        }
        write_record(tmp / "recipe.json", record)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _config_dict(config: PretrainConfig) -> dict[str, Any]:
    data = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "sizes"}
    data["sizes"] = asdict(config.sizes)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _train(config: PretrainConfig, recipe: type[Recipe], folder: Path, progress: bool):
    tokenizer_file = folder / "tokenizer.model"
    tokenizer_file.write_bytes(train_tokenizer(caption_corpus(config.seed, config.tokenizer_scenes),
                                               config.vocab_size))
    encode = _Encoder(tokenizer_file, config.device)
    vocab = encode.tokenizer.processor.vocab_size()
    torch.manual_seed(config.seed)
    models = Models(recipe, config.sizes, vocab).to(config.device)
    step_fn = _Step(recipe, models, config, encode)
    optimizer = torch.optim.AdamW(_param_groups(models, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    total = config.steps if config.steps is not None else (10**9 if config.minutes else DEFAULT_STEPS)
    stream = WorldStream(config.sizes.image_size, config.batch_size, config.seed)
    bar = tqdm(total=total if total < 10**9 else None, desc=f"pretrain {recipe.name}", unit="step",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    record = _Progress()
    calibrate_at = min(1 + CALIBRATION_STEPS, config.warmup_steps)
    t_first = None
    t0, cpu0 = time.perf_counter(), time.process_time()
    loader = batch_loader(stream, 0, config.workers)
    step = 0
    try:
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, total)
            parts = step_fn.losses(batch)
            loss = sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models.parameters(), config.grad_clip)
            optimizer.step()
            step_fn.update_teacher(teacher_momentum(config, step, total))
            values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}
            record.add(step, values, every=25)
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
            if step == 1:
                t_first = time.perf_counter()
            if config.minutes and step == calibrate_at and t_first is not None:
                per_step = (time.perf_counter() - t_first) / (step - 1)
                budget = config.minutes * 60 - (time.perf_counter() - t0)
                fit = step + max(0, int(budget / per_step))
                total = min(config.steps, fit) if config.steps else fit
                total = max(total, step)
                bar.reset(total=total)
                bar.update(step)
            if step >= total:
                break
    finally:
        bar.close()
        del loader
    if step < total:
        raise TipsBenchError(f"the world stream ended after {step} steps; use fewer --steps")
    train_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    config = replace(config, steps=total)
    return config, models, step_fn, {"train_seconds": train_seconds, "train_cpu_seconds": cpu_seconds,
                                     "final_losses": record.final(), "curve": record.curve}
