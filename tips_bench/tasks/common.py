"""Helpers shared by task types: reading cached arrays as tensors, text prompts, class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tips_bench.tasks.base import EvalContext


def class_names(ctx: EvalContext, role: str = "eval") -> list[str]:
    """Prompt-ready class names of a role's dataset (``prompt_names`` when the dataset offers them)."""
    info = ctx.datasets[role].info
    names = info.extra.get("prompt_names") if info.extra else None
    return list(names or info.class_names)


def num_classes(ctx: EvalContext, role: str = "train") -> int:
    info = ctx.datasets[role].info
    return int(info.num_classes or len(info.class_names))


def global_key(ctx: EvalContext) -> str:
    return f"global_{ctx.global_name}"


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_text_embeddings(ctx: EvalContext, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """Per class: fill every template, encode, L2-normalise, average, re-normalise (CLIP protocol)."""
    prompts = [t.format(c=name) if "{c}" in t else t.format(name) for name in names for t in templates]
    emb = l2n(ctx.encode_texts(prompts)).reshape(len(names), len(templates), -1)
    return l2n(emb.mean(axis=1))


def read_globals(entry: Any, key: str) -> np.ndarray:
    """A global embedding of every item as (N, D) float32 (the first view where views are stored)."""
    value = entry.read(key, dtype=np.float32)
    if isinstance(value, list):
        return np.stack([np.asarray(v).reshape(-1, v.shape[-1])[0] for v in value]).astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def to_torch(batch: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def pick_layers(ctx: EvalContext, choice: Any, prefix: str = "") -> list[str]:
    """Cached layer arrays the probe uses: 'last', 'all' or positions in the cached list (e.g. [-1])."""
    names = [n for n in ctx.layer_names if n.startswith(prefix + "patches_")] or ctx.layer_names
    if choice in (None, "last"):
        return names[-1:]
    if choice == "all":
        return names
    return [names[i] for i in choice]
