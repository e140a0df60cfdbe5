"""Cross-checks of tips_bench.frames against the reference protocols' frame steps, on shared inputs.

Every test feeds the same image (or tensor) to tips-bench and to a reference and compares the results within
1e-6 (sizes and uint8 pixels exactly). References are used directly where they can run here:

* mmsegmentation 1.2.2 (the ``[mmseg]`` extra): ``mmseg.models`` does not import with mmcv-lite (it needs
  mmcv's compiled ops), so ``EncoderDecoder.slide_inference`` is compiled from the installed source file
  (the function alone, unchanged) and called with a stub ``self``; the ``resize`` helper is loaded from
  ``mmseg/models/utils/wrappers.py`` by path. mmcv's ``rescale_size`` and ``Resize`` transform import as
  they are. These tests skip when the extra is absent;
* torchvision (a dependency) for the ImageNet and TIPS-notebook image transforms;
* otherwise the independent re-implementations of ``tests/reference_protocols.py`` (DINOv3, the TIPS
  notebook, DINOv2, probe3d), which also run against mmseg's own code here so that they are trusted.

A stand-in for backbone + linear head maps each fitted view to logits: the mean over every patch, then a
fixed random 1x1 convolution, so that window outputs depend on the window's pixels and size.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from reference_protocols import (
    dinov2_center_padding,
    dinov3_fixed_side_hw,
    mmcv_rescale_hw,
    probe3d_center_padding,
    slide_merge,
    tips_resize_up,
    tips_short_side_hw,
    window_starts,
)

from tips_bench.frames import Frame, map_points, sliding_windows
from tips_bench.protocol import FrameSpec
from tips_bench.tasks.base import get_task_definition

TOL = 1e-6
CHANNELS = 5

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


@functools.cache
def _task_spec(task: str) -> FrameSpec:
    return get_task_definition(task).spec.frame


def task_frame(task: str, patch: int, native: int = 448, **changes: object) -> Frame:
    """The frame of a shipped task file, resolved for a backbone of that patch size and native resolution."""
    spec = _task_spec(task)
    if changes:
        spec = FrameSpec.model_validate({**spec.model_dump(), **changes})
    return Frame.resolve(spec, (native, native), native, patch)


def slide_frame(window: int, stride: int, patch: int, fit: str = "pad_center", merge: str = "mean") -> Frame:
    spec = FrameSpec(resize="none", fit=fit, inference="slide", window=window, stride=stride, merge=merge)
    return Frame.resolve(spec, (window, window), window, patch)


class PatchHead:
    """Backbone + linear head stand-in: mean over each patch x patch cell, then a fixed random 1x1 conv."""

    def __init__(self, patch: int, channels: int = CHANNELS, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.patch = patch
        self.weight = torch.randn(channels, 3, generator=g) * 3
        self.bias = torch.randn(channels, generator=g)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, h, w) with h, w multiples of the patch -> (channels, h / patch, w / patch)."""
        cells = F.avg_pool2d(pixels[None], self.patch)[0]
        return torch.einsum("kc,chw->khw", self.weight, cells) + self.bias[:, None, None]


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1], the same conversion on both sides."""
    return torch.from_numpy(np.array(pixels)).movedim(-1, -3).float() / 255.0


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def tips_bench_dense(frame: Frame, image: np.ndarray, head: PatchHead) -> torch.Tensor:
    """The tips-bench path of a dense prediction: prepare -> fit -> head -> merge at the original size."""
    crops, boxes, resized = frame.prepare(image)
    fitted = frame.fit_pixels(to_float(crops))
    outputs = [head(view) for view in fitted]
    return frame.merge_views(outputs, boxes, resized, tuple(image.shape[:2]))


# mmsegmentation, used from its installed sources ------------------------------------------------------------


def _mmseg_file(relative: str) -> Path:
    spec = importlib.util.find_spec("mmseg")
    if spec is None or spec.origin is None:
        pytest.skip("mmsegmentation is not installed; pip install -e '.[mmseg]' to run the mmseg cross-checks")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        pytest.skip(f"this mmsegmentation has no {relative}; the cross-checks are written for 1.2.2")
    return path


@functools.cache
def mmseg_slide_inference() -> Callable[..., torch.Tensor]:
    """``EncoderDecoder.slide_inference`` compiled from the installed file (its module needs mmcv's ops)."""
    path = _mmseg_file("models/segmentors/encoder_decoder.py")
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "slide_inference"]
    if not found:
        pytest.skip("mmseg's EncoderDecoder has no slide_inference")
    namespace: dict[str, object] = {"F": F, "Tensor": torch.Tensor, "List": list}
    exec(compile(ast.Module(body=found[:1], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["slide_inference"]  # type: ignore[return-value]


@functools.cache
def mmseg_wrappers() -> ModuleType:
    """``mmseg/models/utils/wrappers.py`` (the ``resize`` helper) loaded by path."""
    path = _mmseg_file("models/utils/wrappers.py")
    spec = importlib.util.spec_from_file_location("_mmseg_wrappers_for_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mmseg_slide(image: torch.Tensor, window_fn: Callable[[torch.Tensor], torch.Tensor], window: int, stride: int
                ) -> torch.Tensor:
    """mmseg's slide_inference on (3, H, W) with a stub segmentor whose ``encode_decode`` returns
    ``window_fn(crop)`` resized to the crop by mmseg's ``resize`` (what its decode head's predict does)."""
    resize = mmseg_wrappers().resize

    def encode_decode(inputs: torch.Tensor, metas: list[dict]) -> torch.Tensor:
        low = window_fn(inputs[0])[None]
        return resize(low, size=metas[0]["img_shape"], mode="bilinear", align_corners=False)

    stub = SimpleNamespace(test_cfg=SimpleNamespace(crop_size=(window, window), stride=(stride, stride)),
                           out_channels=CHANNELS, encode_decode=encode_decode)
    return mmseg_slide_inference()(stub, image[None], [{}])[0]


# ----------------------------------------------------------------------------------------------------------
# 1. sliding-window merge
# ----------------------------------------------------------------------------------------------------------

# (height, width, window, stride, patch): the ADE20K (512/341) and zero-shot (448/336) settings and small ones;
# sides smaller than the window, exact stride multiples, odd sizes, images smaller than the window.
LARGE_CASES = [(512, 683, 512, 341, 14), (300, 700, 512, 341, 16), (853, 517, 512, 341, 14),
               (448, 597, 448, 336, 14), (449, 1001, 448, 336, 14)]
SMALL_CASES = [(32, 53, 32, 21, 8), (20, 70, 32, 21, 8), (74, 32, 32, 21, 8), (33, 97, 32, 21, 6),
               (10, 11, 32, 21, 4), (48, 48, 16, 16, 8), (50, 37, 16, 16, 8), (64, 91, 24, 16, 8)]
SLIDE_CASES = LARGE_CASES + SMALL_CASES


def _ids(cases: list[tuple[int, ...]]) -> list[str]:
    return [f"{h}x{w}-win{c}-stride{s}" for h, w, c, s, *_ in cases]


SLIDE_IDS = _ids(SLIDE_CASES)


@pytest.mark.parametrize(("height", "width", "window", "stride"), [c[:4] for c in SLIDE_CASES], ids=SLIDE_IDS)
def test_sliding_windows_equal_reference_boxes(height: int, width: int, window: int, stride: int) -> None:
    """``sliding_windows`` boxes = the mmseg/TIPS window grid (mmseg ``EncoderDecoder.slide_inference``,
    TIPS notebook ``predict_slide``): ceil-division count, last window shifted back inside the image."""
    expected = [(top, left, min(top + window, height), min(left + window, width))
                for top in window_starts(height, window, stride) for left in window_starts(width, window, stride)]
    assert sliding_windows(height, width, window, stride) == expected


@functools.cache
def _mean_merge_case(height: int, width: int, window: int, stride: int, patch: int
                     ) -> tuple[torch.Tensor, torch.Tensor, PatchHead]:
    """(image as float, tips-bench's merged logits, head) of one slide case with fit pad_center, merge mean."""
    image = random_image(height, width, seed=height * 1000 + width)
    head = PatchHead(patch)
    return to_float(image), tips_bench_dense(slide_frame(window, stride, patch), image, head), head


def _padded_head(head: PatchHead, patch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A window's logits with DINOv2's CenterPadding inside the backbone (the DINOv2 / mmseg setting)."""
    return lambda crop: head(dinov2_center_padding(crop[None], patch)[0])


@pytest.mark.parametrize(("height", "width", "window", "stride", "patch"), SLIDE_CASES, ids=SLIDE_IDS)
def test_slide_merge_equals_slide_inference_reimplementation(height: int, width: int, window: int, stride: int,
                                                             patch: int) -> None:
    """mmseg ``EncoderDecoder.slide_inference`` as re-implemented from its documented behaviour
    (``slide_merge(flavour='mmseg')``: window logits resized to the window, summed, divided by the window count)
    vs tips-bench ``Frame.prepare`` + ``fit_pixels`` (pad_center) + ``merge_views`` (mean) on the same image and
    head: merged logits at the image size agree within 1e-6. Runs without the ``[mmseg]`` extra."""
    image, ours, head = _mean_merge_case(height, width, window, stride, patch)
    reference = slide_merge(image, _padded_head(head, patch), window, stride, "mmseg")
    assert ours.shape == reference.shape == (CHANNELS, height, width)
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


@pytest.mark.parametrize(("height", "width", "window", "stride", "patch"), SLIDE_CASES, ids=SLIDE_IDS)
def test_slide_merge_equals_mmseg_slide_inference(height: int, width: int, window: int, stride: int,
                                                  patch: int) -> None:
    """mmsegmentation ``EncoderDecoder.slide_inference`` itself (open-mmlab/mmsegmentation
    mmseg/models/segmentors/encoder_decoder.py,
    compiled from the installed 1.2.2 source, called with a stub segmentor whose ``encode_decode`` resizes the
    window logits to the crop with mmseg's ``resize``) vs the same tips-bench merge, and vs the
    re-implementation used without the extra: all agree within 1e-6."""
    image, ours, head = _mean_merge_case(height, width, window, stride, patch)
    reference = mmseg_slide(image, _padded_head(head, patch), window, stride)
    assert ours.shape == reference.shape == (CHANNELS, height, width)
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)
    torch.testing.assert_close(slide_merge(image, _padded_head(head, patch), window, stride, "mmseg"), reference,
                               rtol=0, atol=TOL)


DINOV3_CASES = [c for c in SLIDE_CASES[:1] + SMALL_CASES if c[0] >= c[2] or c[1] >= c[2]]


@pytest.mark.parametrize(("height", "width", "window", "stride", "patch"), DINOV3_CASES, ids=_ids(DINOV3_CASES))
def test_slide_merge_equals_dinov3_slide_inference(height: int, width: int, window: int, stride: int,
                                                   patch: int) -> None:
    """DINOv3 ``slide_inference`` (facebookresearch/dinov3 dinov3/eval/segmentation/inference.py; re-implemented as
    ``slide_merge(flavour='dinov3')``: window logits, from ``predict(crop, rescale_to=crop size)``, summed and
    divided by the window count) vs tips-bench's mean merge, wherever the window fits the image on at least one
    side (always so for the shipped frames, whose short side equals the window)."""
    image = random_image(height, width, seed=7 + height + width)
    head = PatchHead(patch, seed=1)
    ours = tips_bench_dense(slide_frame(window, stride, patch), image, head)
    reference = slide_merge(to_float(image), lambda c: head(dinov2_center_padding(c[None], patch)[0]),
                            window, stride, "dinov3")
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


@pytest.mark.xfail(strict=True, reason="DINOv3 slide_inference shrinks the window to a square of the image's "
                   "short side when the image is smaller than the window on both sides; tips-bench keeps mmseg's "
                   "single clipped window. Not reachable with the shipped frames (short side == window).")
def test_slide_merge_dinov3_image_smaller_than_window() -> None:
    """DINOv3 ``slide_inference`` on a 300x400 image with window 512 / stride 341: two 300x300 windows
    (x 0:300 and 100:400) averaged, where tips-bench (and mmseg) predict one 300x400 window."""
    image = random_image(300, 400, seed=3)
    head = PatchHead(14, seed=2)
    ours = tips_bench_dense(slide_frame(512, 341, 14), image, head)
    reference = slide_merge(to_float(image), lambda c: head(dinov2_center_padding(c[None], 14)[0]), 512, 341,
                            "dinov3")
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


TIPS_CASES = LARGE_CASES[3:] + SMALL_CASES  # the notebook's 448/336 windows and small ones


@pytest.mark.parametrize(("height", "width", "window", "stride", "patch"), TIPS_CASES, ids=_ids(TIPS_CASES))
def test_softmax_merge_equals_tips_predict_slide(height: int, width: int, window: int, stride: int,
                                                 patch: int) -> None:
    """TIPS notebook ``predict_slide`` (google-deepmind/tips pytorch/TIPS_zeroshot_segmentation.ipynb; re-implemented as
    ``slide_merge(flavour='tips')``: each window resized up to patch multiples (bicubic), its map resized to the
    window, softmax over classes, averaged where windows overlap) vs tips-bench with fit resize_up and merge
    softmax_mean."""
    image = random_image(height, width, seed=11 * height + width)
    head = PatchHead(patch, seed=3)
    ours = tips_bench_dense(slide_frame(window, stride, patch, fit="resize_up", merge="softmax_mean"), image, head)
    reference = slide_merge(to_float(image), lambda c: head(tips_resize_up(c[None], patch)[0]), window, stride,
                            "tips")
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


# Original image sizes run through the shipped tasks' whole frames (resize, windows, fit, merge, upsampling).
TASK_IMAGES = [(375, 500), (1200, 250), (333, 517)]  # landscape; the 2,048 cap active; odd portrait


@functools.cache
def _ade20k_case(height: int, width: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor, PatchHead]:
    """(original image, its resized pixels, tips-bench's logits at the original size, head) for
    tasks/ade20k_seg.yaml's frame on a patch-14 backbone."""
    frame = task_frame("ade20k_seg", patch=14)
    image = random_image(height, width, seed=height + 3 * width)
    head = PatchHead(14, seed=4)
    return image, frame.resize_image(image), tips_bench_dense(frame, image, head), head


@pytest.mark.parametrize(("height", "width"), TASK_IMAGES)
def test_ade20k_frame_equals_dinov2_protocol_reimplementation(height: int, width: int) -> None:
    """tasks/ade20k_seg.yaml's frame vs DINOv2's mmseg evaluation re-implemented: ``rescale_size`` with scale
    (2048, 512) for the resized size, the mmseg slide 512/341 with CenterPadding in the backbone, then a bilinear
    (``align_corners=False``) resize of the logits to the original size. Runs without the ``[mmseg]`` extra."""
    image, resized, ours, head = _ade20k_case(height, width)
    assert resized.shape[:2] == mmcv_rescale_hw(height, width, (2048, 512))
    logits = slide_merge(to_float(resized), _padded_head(head, 14), 512, 341, "mmseg")
    reference = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


@pytest.mark.parametrize(("height", "width"), TASK_IMAGES)
def test_ade20k_frame_equals_mmseg_pipeline(height: int, width: int) -> None:
    """tasks/ade20k_seg.yaml's frame for a patch-14 backbone vs DINOv2's mmseg evaluation run through mmseg's
    own code: mmcv's ``Resize`` transform (scale (2048, 512), keep_ratio) gives the resized size,
    ``slide_inference`` 512/341 with CenterPadding in the backbone, then mmseg's ``resize`` of the logits to
    the original size (as ``postprocess_result`` does). Pixels are resized by PIL in tips-bench and by cv2 in
    mmcv; the same resized pixels are fed to both so that the geometry is what is compared."""
    image, resized, ours, head = _ade20k_case(height, width)
    transforms = pytest.importorskip("mmcv.transforms")
    mm = transforms.Resize(scale=(2048, 512), keep_ratio=True)({"img": image})
    assert tuple(mm["img_shape"]) == resized.shape[:2]
    logits = mmseg_slide(to_float(resized), _padded_head(head, 14), 512, 341)
    reference = mmseg_wrappers().resize(logits[None], size=(height, width), mode="bilinear", align_corners=False,
                                        warning=False)[0]
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


@pytest.mark.parametrize(("height", "width"), TASK_IMAGES)
def test_zeroseg_frame_equals_tips_notebook(height: int, width: int) -> None:
    """tasks/ade150_zeroseg.yaml's frame vs the TIPS zero-shot notebook end to end: ``ShortSideResize(448,
    BICUBIC)`` on the PIL image (torchvision), ``predict_slide`` 448/336 with the bicubic resize up to patch
    multiples, then the bilinear resize of the class maps to the label size."""
    frame = task_frame("ade150_zeroseg", patch=14)
    image = random_image(height, width, seed=5 * height + width)
    head = PatchHead(14, seed=5)
    ours = tips_bench_dense(frame, image, head)

    new_h, new_w = tips_short_side_hw(height, width, 448)
    pil = Image.fromarray(image)
    resized = pil if (new_h, new_w) == (height, width) else TF.resize(pil, [new_h, new_w],
                                                                      T.InterpolationMode.BICUBIC)
    maps = slide_merge(to_float(np.asarray(resized)), lambda c: head(tips_resize_up(c[None], 14)[0]), 448, 336,
                       "tips")
    reference = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


# ----------------------------------------------------------------------------------------------------------
# 2. resizing
# ----------------------------------------------------------------------------------------------------------

# A grid of 5,600 sizes, 1 to 3,000 pixels a side, plus sizes whose scaled long side is exactly x.5 (round half
# up, not to even) or whose short side already is the target.
HALF_WAY = [(1024, 1025), (1025, 1024), (1024, 1537), (2048, 2050), (2050, 2048), (896, 1793), (1793, 896)]
SIZE_GRID = [(h, w) for h in range(1, 3001, 37) for w in range(1, 3001, 43)] + HALF_WAY + [
    (512, 700), (700, 512), (448, 1000), (1000, 448), (448, 448), (512, 512)]


def test_keep_aspect_capped_equals_rescale_size_reimplementation() -> None:
    """mmcv ``rescale_size`` as documented (one factor min(2048 / long, 512 / short), each side int(x + 0.5);
    mmseg's test ``Resize(scale=(2048, 512), keep_ratio=True)``) vs ``Frame.resized_size`` of
    tasks/ade20k_seg.yaml (keep_aspect 512, max_long_side 2048, rounding round) on ``SIZE_GRID`` (5,600+ sizes,
    half-way cases included): identical. Runs without the ``[mmseg]`` extra."""
    frame = task_frame("ade20k_seg", patch=14)
    assert [frame.resized_size(h, w) for h, w in SIZE_GRID] == [mmcv_rescale_hw(h, w, (2048, 512))
                                                                for h, w in SIZE_GRID]


def test_keep_aspect_capped_equals_mmcv_rescale_size() -> None:
    """mmcv's own ``rescale_size`` (open-mmlab/mmcv mmcv/image/geometric.py, mmcv-lite 2.1.0 of the ``[mmseg]`` extra)
    with scale (2048, 512) vs ``Frame.resized_size`` of tasks/ade20k_seg.yaml on ``SIZE_GRID``: identical."""
    geometric = pytest.importorskip("mmcv.image.geometric")
    frame = task_frame("ade20k_seg", patch=14)
    assert [frame.resized_size(h, w) for h, w in SIZE_GRID] == [geometric.rescale_size((w, h), (2048, 512))[::-1]
                                                                for h, w in SIZE_GRID]


def test_keep_aspect_round_equals_dinov3_fixed_side_resize() -> None:
    """DINOv3 ``FixedSideResize`` (facebookresearch/dinov3 dinov3/eval/segmentation/transforms.py: short side 512, long
    side int(512 * long / short + 0.5)) vs ``Frame.resized_size`` for keep_aspect/round without a cap, and with the
    2,048 cap of tasks/ade20k_seg.yaml wherever the cap is inactive (aspect ratio <= 4)."""
    uncapped = task_frame("ade20k_seg", patch=14, max_long_side=None)
    capped = task_frame("ade20k_seg", patch=14)
    for h, w in SIZE_GRID:
        assert uncapped.resized_size(h, w) == dinov3_fixed_side_hw(h, w, 512), (h, w)
        if max(h, w) <= 4 * min(h, w):
            assert capped.resized_size(h, w) == dinov3_fixed_side_hw(h, w, 512), (h, w)


def test_keep_aspect_floor_equals_tips_short_side_resize() -> None:
    """TIPS notebook ``ShortSideResize(448)`` (google-deepmind/tips pytorch/TIPS_zeroshot_segmentation.ipynb: short
    side 448, long side int(448 * long / short), images whose
    short side already is 448 untouched) vs ``Frame.resized_size`` of tasks/ade150_zeroseg.yaml."""
    frame = task_frame("ade150_zeroseg", patch=14)
    for h, w in SIZE_GRID:
        assert frame.resized_size(h, w) == tips_short_side_hw(h, w, 448), (h, w)


PIXEL_SIZES = [(300, 400), (400, 300), (256, 256), (224, 224), (333, 501), (500, 257), (257, 999), (97, 61)]


@pytest.mark.parametrize(("height", "width"), PIXEL_SIZES)
def test_center_crop_pixels_equal_torchvision(height: int, width: int) -> None:
    """torchvision ``Resize(256, BICUBIC)`` + ``CenterCrop(224)`` on the PIL image (facebookresearch/dinov2
    dinov2/data/transforms.py ``make_classification_eval_transform``) vs ``Frame.prepare`` of
    tasks/imagenet_knn_dinov2.yaml: the uint8 pixels are identical; likewise ``Resize(448)`` + ``CenterCrop(448)`` for
    tasks/imagenet_knn.yaml on a 448-pixel backbone (CLIP-style preprocess at the native resolution)."""
    image = random_image(height, width, seed=height * 7 + width)
    for task, short, crop in (("imagenet_knn_dinov2", 256, 224), ("imagenet_knn", 448, 448)):
        views, boxes, _ = task_frame(task, patch=14, native=448).prepare(image)
        transform = T.Compose([T.Resize(short, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop)])
        expected = np.asarray(transform(Image.fromarray(image)))
        assert views.shape == (1, crop, crop, 3) and len(boxes) == 1
        np.testing.assert_array_equal(views[0], expected)


@pytest.mark.parametrize(("height", "width"), PIXEL_SIZES[:5])
def test_keep_aspect_pixels_equal_reference_transforms(height: int, width: int) -> None:
    """The resized pixels of the keep_aspect frames vs the references' torchvision-on-PIL resizes: DINOv3
    ``FixedSideResize`` (BILINEAR, tasks/ade20k_seg.yaml) and the TIPS notebook ``ShortSideResize`` (BICUBIC,
    tasks/ade150_zeroseg.yaml); identical uint8 arrays."""
    image = random_image(height, width, seed=height + width)
    pil = Image.fromarray(image)
    for task, size_fn, mode in (("ade20k_seg", lambda h, w: dinov3_fixed_side_hw(h, w, 512), "BILINEAR"),
                                ("ade150_zeroseg", lambda h, w: tips_short_side_hw(h, w, 448), "BICUBIC")):
        expected = np.asarray(TF.resize(pil, list(size_fn(height, width)), T.InterpolationMode[mode]))
        np.testing.assert_array_equal(task_frame(task, patch=14).resize_image(image), expected)


# ----------------------------------------------------------------------------------------------------------
# 2b. patch fit
# ----------------------------------------------------------------------------------------------------------

FIT_SIZES = [(512, 512), (512, 683), (480, 640), (480, 480), (518, 700), (37, 50), (13, 1), (28, 42)]


@pytest.mark.parametrize("patch", [14, 16])
@pytest.mark.parametrize(("height", "width"), FIT_SIZES)
def test_pad_center_equals_dinov2_center_padding(height: int, width: int, patch: int) -> None:
    """DINOv2 ``CenterPadding`` (facebookresearch/dinov2 dinov2/hub/utils.py: pad to ceil multiples, floor(pad / 2)
    before) vs ``Frame.fit_pixels`` with fit pad_center on a random (2, 3, h, w) batch: identical tensors."""
    frame = task_frame("nyu_depth", patch=patch)
    pixels = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
    torch.testing.assert_close(frame.fit_pixels(pixels), dinov2_center_padding(pixels, patch), rtol=0, atol=0)


PROBE3D_SIZES = [(512, 512), (480, 480), (480, 640), (37, 50), (224, 448), (13, 1)]


@pytest.mark.parametrize("patch", [14, 16])
@pytest.mark.parametrize(("height", "width"), PROBE3D_SIZES)
def test_pad_center_equals_probe3d_center_padding(height: int, width: int, patch: int) -> None:
    """probe3d ``center_padding`` (mbanani/probe3d evals/models/utils.py) vs ``Frame.fit_pixels`` of
    tasks/navi_depth.yaml where both sides are, or neither side is, a patch multiple: identical. This covers probe3d's
    own inputs (NAVI 512x512 and NYU-normals 480x480 crops: square, so always one of the two)."""
    if (height % patch == 0) != (width % patch == 0):
        pytest.skip("one side a multiple: see test_pad_center_probe3d_one_side_multiple")
    frame = task_frame("navi_depth", patch=patch)
    pixels = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    torch.testing.assert_close(frame.fit_pixels(pixels), probe3d_center_padding(pixels, patch), rtol=0, atol=0)


@pytest.mark.xfail(strict=True, reason="probe3d center_padding adds a whole patch to a side that already is a "
                   "multiple when the other side is not (pad = patch - size % patch); tips-bench pads that side 0, "
                   "as DINOv2 CenterPadding does. Unreachable with probe3d's square 512/480 crops.")
def test_pad_center_probe3d_one_side_multiple() -> None:
    """probe3d ``center_padding`` on 480x500 with patch 16: 480 is a multiple, 500 is not; probe3d pads the
    rows 8 + 8 (to 496x512), tips-bench (and DINOv2) 0 (to 480x512)."""
    frame = task_frame("navi_depth", patch=16)
    pixels = torch.rand(1, 3, 480, 500, generator=torch.Generator().manual_seed(0))
    ours, reference = frame.fit_pixels(pixels), probe3d_center_padding(pixels, 16)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


@pytest.mark.parametrize(("height", "width"), [(448, 597), (449, 1001), (448, 448), (600, 448), (15, 29)])
def test_resize_up_equals_tips_notebook(height: int, width: int) -> None:
    """TIPS notebook ``encode_image_value_attention`` (google-deepmind/tips
    pytorch/TIPS_zeroshot_segmentation.ipynb: bicubic ``F.interpolate``, ``align_corners=False``, to
    ceil(h / 14) * 14 x ceil(w / 14) * 14; untouched when already multiples) vs ``Frame.fit_pixels`` of
    tasks/ade150_zeroseg.yaml on a random (1, 3, h, w) tensor: equal within 1e-6."""
    frame = task_frame("ade150_zeroseg", patch=14)
    pixels = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(width))
    ours, reference = frame.fit_pixels(pixels), tips_resize_up(pixels, 14)
    assert ours.shape == reference.shape == (1, 3, -(-height // 14) * 14, -(-width // 14) * 14)
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


# ----------------------------------------------------------------------------------------------------------
# 3. upsampling
# ----------------------------------------------------------------------------------------------------------


UPSAMPLE_CASES = [((37, 46), (480, 640)), ((32, 32), (512, 512)), ((27, 36), (375, 500)), ((9, 17), (5, 8)),
                  ((34, 45), (34, 45))]


@pytest.mark.parametrize("reference", ["interpolate", "mmseg"])
@pytest.mark.parametrize(("grid", "original"), UPSAMPLE_CASES)
def test_whole_image_upsampling_equals_references(grid: tuple[int, int], original: tuple[int, int],
                                                  reference: str) -> None:
    """``Frame.merge_views`` on whole-image inference (tasks/nyu_depth.yaml's frame) vs ``F.interpolate(bilinear,
    align_corners=False)`` to the original size (DINOv3 ``make_inference``, TIPS notebook) and vs mmseg's
    ``resize`` helper (mmseg/models/utils/wrappers.py, as ``postprocess_result`` calls it; skipped without the
    ``[mmseg]`` extra) on the same random (C, gh, gw) map; up- and downsampling and the identity."""
    frame = task_frame("nyu_depth", patch=14)
    out = torch.randn(CHANNELS, *grid, generator=torch.Generator().manual_seed(grid[0]))
    ours = frame.merge_views([out], [(0, 0, *original)], original, original)
    if reference == "mmseg":
        expected = mmseg_wrappers().resize(out[None], size=original, mode="bilinear", align_corners=False,
                                           warning=False)[0]
    else:
        expected = F.interpolate(out[None], size=original, mode="bilinear", align_corners=False)[0]
    assert ours.shape == (CHANNELS, *original)
    torch.testing.assert_close(ours, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize(("src", "dst"), [((37, 53), (448, 448)), ((480, 640), (518, 518)), ((30, 20), (45, 50))])
def test_map_points_follows_bilinear_resize_coordinates(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """``map_points`` (used to bring SPair predictions back to the target's original frame) vs the pixel-centre
    convention of ``F.interpolate(bilinear, align_corners=False)`` (torch's ``area_pixel_compute_source_index``):
    every output pixel of an upsampled random map equals the original map sampled bilinearly where the pixel
    maps back to (float64, within 1e-9), and ``map_points`` returns those source coordinates (float32, so
    within 1e-6 relative)."""
    source = torch.randn(1, 1, *src, generator=torch.Generator().manual_seed(src[0]), dtype=torch.float64)
    upsampled = F.interpolate(source, size=dst, mode="bilinear", align_corners=False)[0, 0]
    ys, xs = np.meshgrid(np.arange(dst[0]), np.arange(dst[1]), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    back = (points + 0.5) * np.array([src[1] / dst[1], src[0] / dst[0]]) - 0.5  # torch's source coordinates
    grid = torch.from_numpy((back + 0.5) / np.array([src[1], src[0]]) * 2 - 1)
    sampled = F.grid_sample(source, grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(sampled.reshape(dst), upsampled, rtol=0, atol=1e-9)
    np.testing.assert_allclose(map_points(points, dst, src), back, rtol=1e-6, atol=1e-6)
