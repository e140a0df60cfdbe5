"""Training augmentation of ``mode: faithful``: the reference protocols' pipelines on one sample.

:func:`augment_sample` turns a dataset sample (``image`` and dense targets at the image's size) into one
augmented training view, as the reference training pipelines do, driven by an
:class:`~tips_bench.protocol.AugmentSpec` and a ``numpy.random.Generator`` (never a global RNG).
:class:`AugmentedViews` serves ``K`` such views per image for the cached protocol and
:class:`OnlineAugmented` a fresh view per image and epoch for the backbone-in-the-loop protocol.

Sources (behaviour learnt from them; nothing copied):

* open-mmlab/mmsegmentation ``mmseg/datasets/transforms/transforms.py``: ``RandomCrop`` (``cat_max_ratio``
  re-draws), ``PhotoMetricDistortion``; mmcv ``RandomResize`` / ``rescale_size`` (``ratio_range``, the
  long-side cap) and mmseg's ``SegDataPreProcessor`` padding (bottom/right, ``seg_pad_val=255``, after
  every other transform).
* facebookresearch/dinov3 ``dinov3/eval/segmentation/transforms.py`` (``FixedSideResize`` with
  ``random_img_size_ratio_range``, ``RandomCropWithLabel``, ``PhotoMetricDistortion`` with torchvision's
  ``adjust_saturation`` / ``adjust_hue``, ``PadTensor`` last) and ``dinov3/eval/depth/transforms.py``
  (rotation before flip and crop, ``ColorAug``).
* zhyever/Monocular-Depth-Estimation-Toolbox ``depth/datasets/pipelines/transforms.py``: ``RandomRotate``
  (image bilinear, depth nearest, fill 0) and ``ColorAug`` (gamma, brightness, per-channel colour).
* mbanani/probe3d ``evals/datasets/utils.py``: ``ColorJitter`` applied with a probability before the shared
  geometric transforms, and albumentations 1.3.1 ``RandomResizedCrop(h, w, scale, ratio=(1, 1),
  interpolation=0)`` (square crop, OpenCV nearest resize back to the input size).

Order. Each reference uses a subset of these steps; the order here keeps every reference's own order:
base resize -> ``color_jitter`` (probe3d jitters the whole image before its geometric transforms) ->
``rotate`` (the depth references rotate before flip and crop) -> ``crop`` -> ``flip`` -> ``resized_crop`` ->
``photometric`` -> ``color_aug`` -> padding to the crop size (last, as mmseg and DINOv3 pad after the
photometric distortion, so the padded border is never flipped to the left or colour-distorted). Where two
references disagree on the order of flip and crop (mmseg crops then flips, the depth toolbox flips then
crops) or of flip and rotation (probe3d flips first), the two orders give the same distribution of views
(symmetric angle range, uniform crop offsets), so one order serves both.

Deliberate differences from the references, all about target geometry: flipping negates the normals' x
component and rotation turns their (x, y) components by the image's angle (probe3d's albumentations
pipeline moves normal maps like images without turning the vectors); ``color_aug`` works on [0, 1] floats
as BTS/AdaBins define it (the toolbox and DINOv3 raise 0-255 values to the gamma, which saturates).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from tips_bench.data.base import IGNORE_INDEX, Sample
from tips_bench.errors import InputError, TipsBenchError
from tips_bench.frames import Frame, resize_nearest
from tips_bench.protocol import AugmentSpec

#: Bump when the same spec, seed and sample would give a different augmented view (keys cached views).
AUGMENT_VERSION = 1

#: Dense targets and their fill where a view has no source pixel (padding, rotation corners).
TARGET_FILL: dict[str, float | int | bool] = {"seg": IGNORE_INDEX, "depth": 0.0, "depth_valid": False,
                                              "normals": 0.0, "normals_valid": False}
#: Sample keys that describe the original image's geometry and no longer hold after augmentation.
STALE_KEYS = ("intrinsics", "pose")
#: mmseg ``RandomCrop`` re-draws a crop at most this many times while one class dominates it.
CAT_MAX_REDRAWS = 10
#: mmseg ``PhotoMetricDistortion`` defaults: brightness delta, contrast and saturation ranges, hue delta.
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18 / 180  # OpenCV's 180-step hue circle, as a fraction of the circle (torchvision's unit)
#: Depth toolbox ``ColorAug`` ranges of the NYU config: gamma, brightness, per-channel colour factors.
COLOR_AUG_GAMMA = (0.9, 1.1)
COLOR_AUG_BRIGHTNESS = (0.75, 1.25)
COLOR_AUG_COLOR = (0.9, 1.1)

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), end exclusive
PadValue = int | tuple[int, int, int]


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


def augment_sample(sample: Sample, spec: AugmentSpec, frame: Frame, rng: np.random.Generator,
                   targets: Sequence[str], *, image_pad: PadValue = 0,
                   record: dict[str, Any] | None = None) -> Sample:
    """One augmented training view of ``sample`` (a new dict; the input is not modified).

    ``targets``: the sample keys to carry; dense ones (``seg``, ``depth``, ``depth_valid``, ``normals``,
    ``normals_valid``) move with the image, others (``label``) are copied. Dense keys not listed are dropped
    (they would no longer match the image), as are ``intrinsics`` and ``pose``; metadata (``id``,
    ``captions``, ...) is kept. Padding fills the image with ``image_pad`` (the references pad after
    normalising, with 0, i.e. the backbone's mean colour: pass ``round(255 * mean)`` to match them), ``seg``
    with 255, depth and normals with 0 and the valid masks with False. The parameters drawn are written
    into ``record`` when one is given. ``cat_max_ratio`` checks crops only when ``seg`` is among the targets.
    The same generator state gives the same view.
    """
    _check_spec(spec)
    out, dense = _select(sample, targets)
    log = record if record is not None else {}
    h, w = out["image"].shape[:2]

    # base resize: the frame's own, with its size scaled by a ratio drawn from `rescale`
    resize_frame = frame
    if spec.rescale is not None:
        ratio = float(rng.uniform(*spec.rescale))
        resize_frame = rescaled_frame(frame, ratio, h, w)
        log["rescale"] = ratio
    out = resize_sample(out, resize_frame, dense)
    log["resized"] = tuple(out["image"].shape[:2])

    if spec.color_jitter is not None and _chance(rng, spec.color_jitter_p):
        out["image"], log["color_jitter"] = color_jitter(out["image"], spec.color_jitter, rng)

    if spec.rotate > 0 and _chance(rng, spec.rotate_p):
        angle = float(rng.uniform(-spec.rotate, spec.rotate))
        out = rotate_sample(out, angle, dense)
        log["rotate"] = angle

    if spec.crop is not None:
        seg = out.get("seg") if spec.cat_max_ratio < 1 else None
        box, draws = crop_box(out["image"].shape[:2], spec.crop, rng, seg=seg, cat_max_ratio=spec.cat_max_ratio)
        out = crop_sample(out, box, dense)
        log["crop"], log["crop_draws"] = box, draws

    if spec.flip > 0:
        log["flip"] = _chance(rng, spec.flip)
        if log["flip"]:
            out = flip_sample(out, dense)

    if spec.resized_crop is not None and _chance(rng, spec.resized_crop_p):
        box = resized_crop_box(out["image"].shape[:2], spec.resized_crop, rng)
        out = resized_crop_sample(out, box, dense)
        log["resized_crop"] = box

    if spec.photometric:
        out["image"], log["photometric"] = photometric_distortion(out["image"], rng)

    if spec.color_aug and _chance(rng, spec.color_aug_p):
        out["image"], log["color_aug"] = color_aug(out["image"], rng)

    if spec.crop is not None:
        out = pad_sample(out, spec.crop, dense, image_pad)
    return {k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in out.items()}


def training_frame(frame: Frame) -> Frame:
    """The frame that encodes augmented views as they are: no resize, one whole view, the same patch fit."""
    return dataclasses.replace(frame, resize="none", inference="whole")


def _chance(rng: np.random.Generator, p: float) -> bool:
    return p > 0 and bool(rng.random() < p)


def _check_spec(spec: AugmentSpec) -> None:
    for key in ("rescale", "resized_crop"):
        pair = getattr(spec, key)
        if pair is not None and pair[0] > pair[1]:
            raise TipsBenchError(f"protocol key 'faithful.augment.{key}' is {list(pair)}; write it as [low, high] "
                                 "with low <= high")
    if spec.resized_crop is not None and spec.resized_crop[1] <= 0:
        raise TipsBenchError("protocol key 'faithful.augment.resized_crop' needs an upper scale above 0, "
                             "e.g. [0.5, 1.0]")


def _select(sample: Sample, targets: Sequence[str]) -> tuple[Sample, list[str]]:
    """The keys to carry (image, listed targets, metadata) and the dense ones among them, checked."""
    image = np.asarray(sample.get("image")) if "image" in sample else None
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = "no image" if image is None else f"an image of dtype {image.dtype} and shape {image.shape}"
        raise InputError(f"augmentation needs a uint8 RGB image (H, W, 3) in the sample, got {got}; "
                         "check the dataset loader")
    missing = [k for k in targets if k not in sample]
    if missing:
        raise InputError(f"augmentation target(s) {', '.join(missing)} are not in the sample "
                         f"(it has {', '.join(sorted(sample))}); request only targets the dataset provides")
    dense = [k for k in targets if k in TARGET_FILL]
    out: Sample = {k: v for k, v in sample.items() if k not in TARGET_FILL and k not in STALE_KEYS}
    out["image"] = image
    for key in dense:
        value = np.asarray(sample[key])
        if value.shape[:2] != image.shape[:2]:
            raise InputError(f"target '{key}' has size {value.shape[:2]} but its image {image.shape[:2]}; dense "
                             "targets must be at the image's size before augmentation")
        out[key] = value
    return out, dense


def _map_dense(sample: Sample, dense: Sequence[str], fn: Callable[[np.ndarray, Any], np.ndarray],
               image_fill: Any = 0) -> Sample:
    """Apply one geometric step to the image and every dense target (``fn(array, fill)``)."""
    out = dict(sample)
    out["image"] = fn(sample["image"], image_fill)
    for key in dense:
        out[key] = fn(sample[key], TARGET_FILL[key])
    return out


# ---------------------------------------------------------------------------------------------------------
# Geometric steps
# ---------------------------------------------------------------------------------------------------------


def rescaled_frame(frame: Frame, ratio: float, height: int, width: int) -> Frame:
    """The frame with its resize target scaled by ``ratio`` (mmseg ``RandomResize``, DINOv3 ``FixedSideResize``).

    As both references do, the scaled sizes are truncated: ``int(short_side * ratio)`` and, for mmseg's
    keep-ratio resize, ``int(max_long_side * ratio)``; a square frame scales both sides, a ``none`` frame
    the image's own size.
    """

    def scale(v: int) -> int:
        return max(1, int(v * ratio))

    if frame.resize == "square":
        return dataclasses.replace(frame, square=(scale(frame.square[0]), scale(frame.square[1])))
    if frame.resize == "none":
        return dataclasses.replace(frame, resize="square", square=(scale(height), scale(width)))
    cap = scale(frame.max_long_side) if frame.max_long_side is not None else None
    return dataclasses.replace(frame, short_side=scale(frame.short_side), max_long_side=cap)


def resize_sample(sample: Sample, frame: Frame, dense: Sequence[str]) -> Sample:
    """The frame's resize: the image with PIL and the frame's interpolation, targets nearest."""
    out = dict(sample)
    out["image"] = frame.resize_image(sample["image"])
    size = out["image"].shape[:2]
    for key in dense:
        out[key] = resize_nearest(sample[key], size)
    return out


def crop_box(shape: tuple[int, int], size: tuple[int, int], rng: np.random.Generator, *,
             seg: np.ndarray | None = None, cat_max_ratio: float = 1.0,
             ignore_index: int = IGNORE_INDEX) -> tuple[Box, int]:
    """An mmseg ``RandomCrop`` box of ``size`` (h, w) in an image of ``shape``, and how many boxes were drawn.

    The offset is uniform over the margin (0 along a side shorter than the crop, which is then padded).
    With ``seg`` and ``cat_max_ratio < 1`` the box is re-drawn, at most 10 times, until the crop holds more
    than one labelled class and none covers ``cat_max_ratio`` or more of its labelled pixels; the last
    draw is kept whatever it holds.
    """
    height, width = shape

    def draw() -> Box:
        y0 = int(rng.integers(0, max(height - size[0], 0) + 1))
        x0 = int(rng.integers(0, max(width - size[1], 0) + 1))
        return (y0, x0, min(y0 + size[0], height), min(x0 + size[1], width))

    box, draws = draw(), 1
    if seg is not None and cat_max_ratio < 1.0:
        for _ in range(CAT_MAX_REDRAWS):
            y0, x0, y1, x1 = box
            labels, counts = np.unique(seg[y0:y1, x0:x1], return_counts=True)
            counts = counts[labels != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box, draws = draw(), draws + 1
    return box, draws


def crop_sample(sample: Sample, box: Box, dense: Sequence[str]) -> Sample:
    """The image and dense targets cut to ``box``."""
    y0, x0, y1, x1 = box
    return _map_dense(sample, dense, lambda a, _fill: a[y0:y1, x0:x1])


def pad_sample(sample: Sample, size: tuple[int, int], dense: Sequence[str], image_pad: PadValue = 0) -> Sample:
    """Pad at the bottom and right up to ``size`` (mmseg ``Pad`` / DINOv3 ``PadTensor``); larger sides stay."""
    h, w = sample["image"].shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return dict(sample)

    def pad(a: np.ndarray, fill: Any) -> np.ndarray:
        out = np.empty((h + ph, w + pw, *a.shape[2:]), dtype=a.dtype)
        out[...] = np.asarray(fill, dtype=a.dtype)
        out[:h, :w] = a
        return out

    return _map_dense(sample, dense, pad, image_fill=image_pad)


def flip_sample(sample: Sample, dense: Sequence[str]) -> Sample:
    """Horizontal flip of the image and targets; surface normals' x component changes sign."""
    out = _map_dense(sample, dense, lambda a, _fill: a[:, ::-1])
    if "normals" in dense:
        normals = out["normals"].copy()
        normals[..., 0] *= -1
        out["normals"] = normals
    return out


def rotate_sample(sample: Sample, degrees: float, dense: Sequence[str]) -> Sample:
    """Rotate counter-clockwise by ``degrees`` about the image centre (depth toolbox ``RandomRotate``).

    The image is resampled bilinearly, targets with nearest neighbour; corners with no source pixel get
    0 (image, depth, normals), 255 (seg) or False (masks). Normals' (x, y) components turn by the same
    in-plane angle (a roll of the camera about its optical axis). Resampling is PIL's (the conventions
    torchvision's rotation follows: centre of the pixel grid, counter-clockwise), per channel in float32.
    """

    def rot(a: np.ndarray, fill: Any) -> np.ndarray:
        if a.dtype == np.uint8 and a.ndim == 3:  # the image
            return np.asarray(Image.fromarray(a).rotate(degrees, resample=Image.Resampling.BILINEAR,
                                                        fillcolor=(int(fill),) * 3))
        planes = a[..., None] if a.ndim == 2 else a
        out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32))
                                   .rotate(degrees, resample=Image.Resampling.NEAREST, fillcolor=float(fill)))
                        for c in range(planes.shape[2])], axis=-1)
        out = out[..., 0] if a.ndim == 2 else out
        return out > 0.5 if a.dtype == np.bool_ else out.astype(a.dtype)

    out = _map_dense(sample, dense, rot)
    if "normals" in dense:
        out["normals"] = rotate_vectors(out["normals"], degrees)
    return out


def rotate_vectors(normals: np.ndarray, degrees: float) -> np.ndarray:
    """Turn the (x, y) components of camera-frame vectors (x right, y down) as a counter-clockwise image rotation."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    out = normals.astype(np.float32, copy=True)
    x, y = normals[..., 0], normals[..., 1]
    out[..., 0] = c * x + s * y
    out[..., 1] = -s * x + c * y
    return out


def resized_crop_box(shape: tuple[int, int], scale: tuple[float, float], rng: np.random.Generator) -> Box:
    """A square box of area fraction drawn from ``scale`` (albumentations 1.3.1 ``RandomResizedCrop``, ratio 1).

    Up to 10 draws of a side ``round(sqrt(s * H * W))`` that fits the image, at a uniform position; if none
    fits, the central square of the short side (the reference's fallback for aspect ratios other than 1).
    """
    height, width = shape
    area = height * width
    for _ in range(10):
        side = int(round(math.sqrt(float(rng.uniform(*scale)) * area)))
        if 0 < side <= width and 0 < side <= height:
            y0 = int(rng.integers(0, height - side + 1))
            x0 = int(rng.integers(0, width - side + 1))
            return (y0, x0, y0 + side, x0 + side)
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    return (y0, x0, y0 + side, x0 + side)


def resized_crop_sample(sample: Sample, box: Box, dense: Sequence[str]) -> Sample:
    """Cut ``box`` and resize it back to the input size with OpenCV's nearest rule, image and targets alike.

    Output pixel ``(i, j)`` takes source ``(floor(i * h / H), floor(j * w / W))`` of the crop (OpenCV
    ``INTER_NEAREST``, which probe3d's ``interpolation=0`` selects), so every value is a source value.
    """
    height, width = sample["image"].shape[:2]
    y0, x0, y1, x1 = box
    rows = y0 + np.minimum(np.floor(np.arange(height) * ((y1 - y0) / height)).astype(np.int64), y1 - y0 - 1)
    cols = x0 + np.minimum(np.floor(np.arange(width) * ((x1 - x0) / width)).astype(np.int64), x1 - x0 - 1)
    return _map_dense(sample, dense, lambda a, _fill: a[rows[:, None], cols[None, :]])


# ---------------------------------------------------------------------------------------------------------
# Photometric steps (image only)
# ---------------------------------------------------------------------------------------------------------


def _scale_shift(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``image * alpha + beta`` in float32, clipped to [0, 255] and truncated to uint8 (mmseg's ``convert``)."""
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _on_tensor(image: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Run a torchvision functional op on a uint8 (H, W, 3) image as a (3, H, W) tensor."""
    return fn(torch.from_numpy(np.array(image)).permute(2, 0, 1)).permute(1, 2, 0).numpy()


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """mmseg / DINOv3 ``PhotoMetricDistortion`` on uint8 RGB; returns the image and the factors applied.

    Brightness (add a delta from [-32, 32]), contrast (multiply by [0.5, 1.5]) first or last (mode drawn),
    saturation ([0.5, 1.5], torchvision ``adjust_saturation``) and hue (a shift of up to 18/180 of the
    circle, torchvision ``adjust_hue``), each with probability 0.5, all on uint8 with clipping.
    """
    params: dict[str, Any] = {}
    if rng.random() < 0.5:
        params["brightness"] = float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
        image = _scale_shift(image, beta=params["brightness"])
    contrast_last = bool(rng.integers(2) == 0)
    params["contrast_last"] = contrast_last

    def contrast(img: np.ndarray) -> np.ndarray:
        if rng.random() < 0.5:
            params["contrast"] = float(rng.uniform(*CONTRAST_RANGE))
            return _scale_shift(img, alpha=params["contrast"])
        return img

    if not contrast_last:
        image = contrast(image)
    if rng.random() < 0.5:
        factor = params["saturation"] = float(rng.uniform(*SATURATION_RANGE))
        image = _on_tensor(image, lambda t: TF.adjust_saturation(t, factor))
    if rng.random() < 0.5:
        shift = params["hue"] = float(rng.uniform(-HUE_DELTA, HUE_DELTA))
        image = _on_tensor(image, lambda t: TF.adjust_hue(t, shift))
    if contrast_last:
        image = contrast(image)
    return image, params


def color_jitter(image: np.ndarray, strength: Sequence[float],
                 rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """torchvision ``ColorJitter(b, c, s, h)`` with its factors and random op order drawn from ``rng``.

    Factors come from [max(0, 1 - b), 1 + b] (likewise c, s) and [-h, h]; a zero strength skips its op.
    The ops run on [0, 1] floats, as in probe3d (after ``ToTensor``), and the result is rounded to uint8.
    """
    b, c, s, h = (float(v) for v in strength)
    order = [int(i) for i in rng.permutation(4)]
    factors = [float(rng.uniform(max(0.0, 1 - v), 1 + v)) if v > 0 else None for v in (b, c, s)]
    factors.append(float(rng.uniform(-h, h)) if h > 0 else None)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    t = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(torch.float32) / 255.0
    for i in order:
        if factors[i] is not None:
            t = ops[i](t, factors[i])
    out = (t * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    names = ("brightness", "contrast", "saturation", "hue")
    return out, {"order": [names[i] for i in order], **{n: f for n, f in zip(names, factors, strict=True)}}


def color_aug(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Depth toolbox ``ColorAug`` on [0, 1] floats: ``x ** gamma * brightness * colour[channel]``, clipped.

    gamma from [0.9, 1.1], brightness from [0.75, 1.25] (the NYU config), one colour factor per channel
    from [0.9, 1.1]; rounded back to uint8.
    """
    gamma = float(rng.uniform(*COLOR_AUG_GAMMA))
    brightness = float(rng.uniform(*COLOR_AUG_BRIGHTNESS))
    colors = rng.uniform(*COLOR_AUG_COLOR, size=3)
    x = (image.astype(np.float32) / 255.0) ** gamma * brightness * colors.astype(np.float32)
    out = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out, {"gamma": gamma, "brightness": brightness, "colors": [float(v) for v in colors]}


# ---------------------------------------------------------------------------------------------------------
# Datasets of augmented views
# ---------------------------------------------------------------------------------------------------------


class _Augmented:
    """What both wrappers share: the wrapped dataset's identity and the augmentation's settings."""

    kind = ""

    def __init__(self, dataset: Any, spec: AugmentSpec, frame: Frame, *, seed: int = 0,
                 targets: Sequence[str] = (), image_pad: PadValue = 0):
        if int(seed) < 0:
            raise TipsBenchError(f"augmentation seed must be >= 0, got {seed}")
        _check_spec(spec)
        self.dataset, self.spec, self.frame = dataset, spec, frame
        self.seed = int(seed)
        self.targets = tuple(targets)
        self.image_pad = image_pad

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def split(self) -> str:
        return self.dataset.split

    @property
    def info(self) -> Any:
        return self.dataset.info

    @property
    def root(self) -> Any:
        return getattr(self.dataset, "root", "")

    @property
    def image_size(self) -> Any:
        return getattr(self.dataset, "image_size", None)

    def _augment(self, image_index: int, seed_key: tuple[int, ...]) -> Sample:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=seed_key))
        return augment_sample(self.dataset[image_index], self.spec, self.frame, rng, self.targets,
                              image_pad=self.image_pad)

    def __len__(self) -> int:
        raise NotImplementedError

    def _index(self, index: int) -> int:
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return i

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the items, as plain JSON data (for cache keys and result rows).

        The package versions are there because numpy's generator streams, torchvision's colour ops and
        PIL's resampling are not promised to stay the same across releases.
        """
        ds = self.dataset
        own = getattr(ds, "fingerprint", None)
        source = {"name": getattr(ds, "name", type(ds).__name__), "split": getattr(ds, "split", ""), "len": len(ds),
                  "root": str(getattr(ds, "root", "")), "seed": getattr(ds, "seed", None),
                  "image_size": getattr(ds, "image_size", None),
                  "notes": getattr(getattr(ds, "info", None), "notes", ""),
                  "fingerprint": own() if callable(own) else None}
        return _jsonable({"kind": self.kind, "augment_version": AUGMENT_VERSION, "seed": self.seed,
                          "targets": list(self.targets), "spec": self.spec.model_dump(mode="json"),
                          "frame": self.frame.describe(), "image_pad": self.image_pad, "dataset": source,
                          "packages": {p: _version(p) for p in ("numpy", "torch", "torchvision", "pillow")}})


class AugmentedViews(_Augmented):
    """``views`` augmented views of every image of a dataset, fixed by ``seed`` (the cached protocol).

    Item ``i`` is view ``i % views`` of image ``i // views``, augmented with a generator seeded from
    ``(seed, image, view)`` through ``numpy.random.SeedSequence``: an item is the same in every process and
    run, and view ``v`` of an image does not change when ``views`` grows, so more views extend a cache.
    Items are augmented samples (image and targets); encode them with :func:`training_frame` so nothing
    resizes them again.
    """

    kind = "augmented_views"

    def __init__(self, dataset: Any, spec: AugmentSpec, frame: Frame, *, views: int, seed: int = 0,
                 targets: Sequence[str] = (), image_pad: PadValue = 0):
        if int(views) < 1:
            raise TipsBenchError(f"augmented views need views >= 1, got {views}; set faithful.views to 1 or more "
                                 "(0 means the backbone runs in the loop: use OnlineAugmented)")
        super().__init__(dataset, spec, frame, seed=seed, targets=targets, image_pad=image_pad)
        self.views = int(views)

    def __len__(self) -> int:
        return len(self.dataset) * self.views

    def source(self, index: int) -> tuple[int, int]:
        """(image index in the wrapped dataset, view number) of item ``index``."""
        return divmod(self._index(index), self.views)

    def __getitem__(self, index: int) -> Sample:
        image, view = self.source(index)
        return self._augment(image, (0, image, view))

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "views": self.views}


class OnlineAugmented(_Augmented):
    """One fresh augmented view of every image per epoch (the backbone-in-the-loop protocol).

    Item ``i`` is image ``i`` augmented with a generator seeded from ``(seed, epoch, i)``; call
    :meth:`set_epoch` before each epoch (in the process that reads items: DataLoader workers must be
    re-created per epoch, i.e. ``persistent_workers=False``). Draws never coincide with
    :class:`AugmentedViews` items of the same seed.
    """

    kind = "online_augmented"

    def __init__(self, dataset: Any, spec: AugmentSpec, frame: Frame, *, seed: int = 0,
                 targets: Sequence[str] = (), image_pad: PadValue = 0, epoch: int = 0):
        super().__init__(dataset, spec, frame, seed=seed, targets=targets, image_pad=image_pad)
        self.epoch = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items from ``epoch``'s augmentations."""
        if int(epoch) < 0:
            raise TipsBenchError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        i = self._index(index)
        return self._augment(i, (1, self.epoch, i))

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "epoch": self.epoch}


def _jsonable(value: Any) -> Any:
    """Plain JSON data: tuples become lists, mappings get string keys, anything else unknown its text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
