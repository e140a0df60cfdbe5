"""Read image files into [0, 1] RGB tensors at a chosen size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tips_bench.errors import InputError

RESIZE = Image.Resampling.BICUBIC  # the TIPS demos resize with a fixed-size (H, W) resize


def parse_size(text: str) -> tuple[int, int]:
    """'448' or '448x336' (height x width) -> (448, 448) or (448, 336)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) <= 0:
        raise InputError(f"image size '{text}' is not HxW (e.g. 448x448) or a single side (e.g. 448)")
    return (values[0], values[-1])


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to size = (height, width) with bicubic filtering."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), RESIZE))


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack (H, W, 3) uint8 images into a float (B, 3, H, W) tensor in [0, 1]."""
    batch = np.stack(images).astype(np.float32) / 255.0
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file to uint8 RGB and resize it; one clear error if it is unreadable."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise InputError(f"image {path} does not exist") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: it is not a readable image file") from exc
    return resize_uint8(rgb, size)
