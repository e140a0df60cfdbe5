"""The deterministic pretraining loop behind ``tips-bench pretrain``.

Everything is a function of the configuration: the world stream (:mod:`world`), the tokenizer
(trained on world captions), the initial weights (``torch.manual_seed(seed)``), the masks and crops
(a seeded generator), with deterministic algorithms and a fixed thread count. ``--minutes`` picks
the step count from the speed of the first steps (which do not depend on it: they are in the
learning-rate warm-up), so the recorded ``--steps`` rebuilds the same run.
"""

from __future__ import annotations

import contextlib
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
from tqdm import tqdm

from tips_bench.pretrain import losses as L
from tips_bench.pretrain.config import CALIBRATION_STEPS, DEFAULT_STEPS, PretrainConfig, file_prefix, rebuild_command
from tips_bench.pretrain.export import (
    prepare_out,
    publish,
    sha256,
    text_arrays,
    vision_arrays,
    write_npz,
    write_record,
)
from tips_bench.pretrain.objectives import CaptionEncoder, Models, Objective, param_groups
from tips_bench.pretrain.recipes import Recipe, get_recipe
from tips_bench.pretrain.tokenizer import train_tokenizer
from tips_bench.pretrain.world import PRETRAIN_SPLIT, TOKENIZER_SPLIT, WorldStream, batch_loader, caption_corpus

__all__ = ["DEFAULT_STEPS", "PretrainConfig", "pretrain", "rebuild_command"]


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
    prepare_out(out, overwrite)
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
        publish(tmp, out)
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
    encode = CaptionEncoder(tokenizer_file, config.device)
    vocab = encode.tokenizer.processor.vocab_size()
    torch.manual_seed(config.seed)
    models = Models(recipe, config.sizes, vocab).to(config.device)
    step_fn = Objective(recipe, models, config, encode)
    optimizer = torch.optim.AdamW(param_groups(models, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
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
    train_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    config = replace(config, steps=total)
    return config, models, step_fn, {"train_seconds": train_seconds, "train_cpu_seconds": cpu_seconds,
                                     "final_losses": record.final(), "curve": record.curve}
