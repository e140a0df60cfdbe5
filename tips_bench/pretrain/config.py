"""The configuration of a pretraining run and the command line that rebuilds it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from tips_bench.errors import TipsBenchError
from tips_bench.pretrain.models import TowerSizes
from tips_bench.pretrain.recipes import get_recipe

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
