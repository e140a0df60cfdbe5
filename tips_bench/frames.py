"""Evaluation frames: how an image becomes backbone input views, and how view outputs return to the image.

A :class:`Frame` is a task's :class:`~tips_bench.protocol.FrameSpec` resolved for one backbone (``native``
sizes replaced by numbers, the patch size known). It computes, for an image of any size:

* the resized size (``square``, ``keep_aspect``, ``center_crop`` or ``none``);
* the views: the whole resized image, its centre crop, or sliding windows (mmseg ``slide_inference``
  geometry, as DINOv3 and the TIPS zero-shot notebook use it);
* the patch fit of each view: centre padding (DINOv2 ``CenterPadding``, probe3d ``center_padding``) or a
  bicubic resize up to the next patch multiple (TIPS notebook), applied to float pixels;
* the merge of per-view predictions back onto the resized image and their upsampling to the original
  label size (bilinear, ``align_corners=False``), where every dense metric is computed.

Geometry is written out here because it must equal the references exactly (tests compare it with
torchvision's transforms and mmsegmentation's ``slide_inference``); resampling itself is PIL's (image
resize, as torchvision does on PIL images) and torch's (feature and prediction maps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tips_bench.errors import InputError
from tips_bench.protocol import FrameSpec

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1) in the resized image, end exclusive

_PIL = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Frame:
    """A frame spec with every size resolved for one backbone."""

    resize: str
    square: tuple[int, int]
    short_side: int
    max_long_side: int | None
    crop: int
    rounding: str
    interpolation: str
    fit: str
    inference: str
    window: int
    stride: int
    merge: str
    patch: int

    @classmethod
    def resolve(cls, spec: FrameSpec, resolution: tuple[int, int], native: int, patch: int) -> Frame:
        """``native`` sizes become the backbone's native resolution; ``resolution`` is the square size."""

        def size(v: int | str) -> int:
            return native if v == "native" else int(v)

        return cls(resize=spec.resize, square=(int(resolution[0]), int(resolution[1])),
                   short_side=size(spec.short_side), max_long_side=spec.max_long_side, crop=size(spec.crop),
                   rounding=spec.rounding, interpolation=spec.interpolation, fit=spec.fit, inference=spec.inference,
                   window=size(spec.window), stride=int(spec.stride or size(spec.window)), merge=spec.merge,
                   patch=int(patch))

    # -- geometry --------------------------------------------------------------------------------
    @property
    def fixed_shape(self) -> bool:
        """Whether every image gives one view of the same size (features then stack into fixed arrays)."""
        return self.resize in ("square", "center_crop") and self.inference == "whole"

    def describe(self) -> dict[str, object]:
        """The resolved frame as recorded in result rows."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the image after the frame's resize (before crops, windows and patch fit)."""
        if self.resize == "square":
            return self.square
        if self.resize == "none":
            return (height, width)
        short = self.short_side
        if self.resize == "keep_aspect" and self.max_long_side is not None:
            # mmcv rescale_size: one scale factor for both sides, bounded by both limits
            scale = min(self.max_long_side / max(height, width), short / min(height, width))
            return (int(height * scale + 0.5), int(width * scale + 0.5))
        rnd = (lambda x: int(x + 0.5)) if self.rounding == "round" and self.resize == "keep_aspect" else int
        if height <= width:
            return (short, rnd(short * width / height))
        return (rnd(short * height / width), short)

    def views(self, height: int, width: int) -> list[Box]:
        """The view boxes of a resized image of size (height, width)."""
        if self.resize == "center_crop":
            c = self.crop
            top, left = int(round((height - c) / 2.0)), int(round((width - c) / 2.0))
            return [(top, left, top + c, left + c)]
        if self.inference == "whole":
            return [(0, 0, height, width)]
        return sliding_windows(height, width, self.window, self.stride)

    def fitted_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of a view after the patch fit."""
        p = self.patch
        if self.fit == "none":
            if height % p or width % p:
                raise InputError(f"input {height}x{width} is not a multiple of the patch size {p}; set "
                                 "frame.fit to pad_center or resize_up, or choose sizes that are multiples of it")
            return (height, width)
        return (math.ceil(height / p) * p, math.ceil(width / p) * p)

    # -- images ----------------------------------------------------------------------------------
    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """Resize uint8 RGB (H, W, 3) as the frame says (PIL, as torchvision does on PIL images)."""
        size = self.resized_size(*image.shape[:2])
        if tuple(image.shape[:2]) == size:
            return image
        return np.asarray(Image.fromarray(image).resize((size[1], size[0]), _PIL[self.interpolation]))

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, list[Box], tuple[int, int]]:
        """Views of one image: uint8 (n, h, w, 3) crops (one size per image), their boxes, the resized size."""
        resized = self.resize_image(image)
        h, w = resized.shape[:2]
        boxes = self.views(h, w)
        return np.stack([resized[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes]), boxes, (h, w)

    def fit_pixels(self, pixels: torch.Tensor, fill: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
        """Apply the patch fit to float pixels (B, 3, h, w): centre padding or bicubic resize up.

        ``fill`` is the padding colour in [0, 1]; pass the backbone's normalisation mean, since DINOv2 and
        probe3d pad the normalised image with zeros.
        """
        h, w = pixels.shape[-2:]
        fh, fw = self.fitted_size(h, w)
        if (fh, fw) == (h, w):
            return pixels
        if self.fit == "pad_center":
            top, left = (fh - h) // 2, (fw - w) // 2
            color = torch.as_tensor(fill, dtype=pixels.dtype).view(1, 3, 1, 1)
            out = color.expand(pixels.shape[0], 3, fh, fw).clone()
            out[:, :, top : top + h, left : left + w] = pixels
            return out
        return F.interpolate(pixels, size=(fh, fw), mode="bicubic", align_corners=False)

    def fit_target(self, target: np.ndarray, fill: float | int) -> np.ndarray:
        """A view-aligned target (h, w[, c]) brought to the fitted size like the pixels (oracle inputs)."""
        h, w = target.shape[:2]
        fh, fw = self.fitted_size(h, w)
        if (fh, fw) == (h, w):
            return target
        if self.fit == "pad_center":
            top, left = (fh - h) // 2, (fw - w) // 2
            pad = [(top, fh - h - top), (left, fw - w - left)] + [(0, 0)] * (target.ndim - 2)
            return np.pad(target, pad, constant_values=fill)
        return resize_nearest(target, (fh, fw))

    # -- predictions -----------------------------------------------------------------------------
    def merge_views(self, outputs: Sequence[torch.Tensor], boxes: Sequence[Box], resized: tuple[int, int],
              original: tuple[int, int]) -> torch.Tensor:
        """Per-view outputs (C, gh, gw) -> one map (C, H, W) at the original image size.

        Whole-image inference upsamples its single view straight to the original size (as DINOv3's and the
        TIPS notebook's whole-image inference do); otherwise each view's output is resized
        to its box (softmax over channels first for ``softmax_mean``), summed where boxes overlap, divided
        by the overlap count (mmseg ``slide_inference``) and the result upsampled to the original size.
        Predictions of a padded view are resized to the unpadded view, as DINOv2 and probe3d do.
        """
        if self.inference == "whole" and len(outputs) == 1 and boxes[0] == (0, 0, *resized):
            return _resize(outputs[0], original)
        canvas = outputs[0].new_zeros((outputs[0].shape[0], *resized))
        count = outputs[0].new_zeros((1, *resized))
        for out, (y0, x0, y1, x1) in zip(outputs, boxes, strict=True):
            view = _resize(out, (y1 - y0, x1 - x0))
            if self.merge == "softmax_mean":
                view = view.softmax(dim=0)
            canvas[:, y0:y1, x0:x1] += view
            count[:, y0:y1, x0:x1] += 1
        if bool((count == 0).any()):
            raise ValueError("the views do not cover the resized image; dense tasks need whole or slide inference")
        return _resize(canvas / count, original)


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[Box]:
    """mmseg ``slide_inference`` windows: a grid at ``stride``, the last window shifted back inside the image.

    Windows are ``window`` x ``window`` (or the image's size along a side that is shorter).
    """
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride + window, height), min(c * stride + window, width)
            boxes.append((max(y1 - window, 0), max(x1 - window, 0), y1, x1))
    return boxes


def resize_nearest(value: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label-like map (H, W) or (H, W, C) of any dtype (PIL, per channel)."""
    if tuple(value.shape[:2]) == tuple(size):
        return value
    if value.ndim == 3:
        return np.stack([resize_nearest(value[..., c], size) for c in range(value.shape[2])], axis=-1)
    dtype = value.dtype
    if dtype == np.bool_:
        src = value.astype(np.uint8)
    elif np.issubdtype(dtype, np.integer):
        src = value.astype(np.int32)
    else:
        src = value.astype(np.float32)
    out = np.asarray(Image.fromarray(src).resize((size[1], size[0]), Image.Resampling.NEAREST))
    return out.astype(dtype)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


def map_points(points: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(x, y) pixel-centre coordinates of an image of size ``src`` mapped to a resize of it to ``dst``."""
    out = np.asarray(points, dtype=np.float32).copy()
    out[..., 0] = (out[..., 0] + 0.5) * (dst[1] / src[1]) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (dst[0] / src[0]) - 0.5
    return out
