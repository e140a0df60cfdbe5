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
    """Stack (H, W, 3) images (uint8, or float in [0, 1] from deeper files) into a float (B, 3, H, W) tensor in
    [0, 1]."""
    batch = np.stack([im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im.astype(np.float32)
                      for im in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


#: Modes whose samples are 8 bits: converted to RGB by PIL (palette, alpha, CMYK, YCbCr ... included).
_EIGHT_BIT = ("1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _scale_deep(values: np.ndarray) -> np.ndarray:
    """Samples of a 16-bit, 32-bit integer or float image scaled into [0, 1], never clipped: 16-bit ranges by
    65535, float images already in [0, 1] as they are, anything else by its own range."""
    v = values.astype(np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if values.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        out = v
    elif lo >= 0.0 and hi <= 65535.0 and (values.dtype.kind in "ui" or float(np.abs(v - np.round(v)).max()) == 0):
        out = v / 65535.0
    elif not np.isfinite(v).all():
        raise InputError("the image holds NaN or infinite samples")
    else:
        out = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return out.astype(np.float32)


def _decode(img: Image.Image) -> np.ndarray:
    """An opened image as (H, W, 3) RGB: uint8 for 8-bit modes, float32 in [0, 1] for deeper ones."""
    if img.mode in _EIGHT_BIT:
        return np.asarray(img.convert("RGB"))
    if img.mode.startswith(("I", "F")):  # I;16, I;16B, I;16L, I (32-bit int), F (32-bit float)
        gray = _scale_deep(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def _open(path: str | Path) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"image {path} is a folder, not an image file; pass the image files themselves")
    try:
        with Image.open(p) as img:
            img.load()
            try:
                return _decode(img)
            except InputError as exc:
                raise InputError(f"cannot read image {path}: {exc}") from None
    except FileNotFoundError as exc:
        raise InputError(f"image {path} does not exist") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"cannot read image {path}: it is not an image file PIL can decode (PNG, JPEG, TIFF, "
                         "...)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: it is truncated or damaged ({' '.join(str(exc).split())})") \
            from exc


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to float32 (H, W, 3) RGB in [0, 1] at its own size: 8-bit samples divided by 255,
    16-bit by 65535, float images kept; grey, palette, alpha and CMYK modes become RGB. One clear error if the
    file is unreadable."""
    image = _open(path)
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image


def _resize_float(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W, 3) image with bicubic filtering, channel by channel in 32-bit float."""
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F").resize(
        (size[1], size[0]), RESIZE)) for c in range(image.shape[2])]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0)  # bicubic overshoot only: the samples are in [0, 1]


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file and resize it: uint8 RGB for 8-bit files, float32 RGB in [0, 1] for 16-bit or float
    files (``to_tensor`` takes both); one clear error if it is unreadable."""
    image = _open(path)
    if image.dtype == np.uint8:
        return resize_uint8(image, size)
    return image if image.shape[:2] == tuple(size) else _resize_float(image, size)
