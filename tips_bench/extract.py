"""The cache's fill step: decode and frame images in worker processes, run the backbone, store fp16.

This is the only place the backbone runs on images. Workers (``torch.utils.data.DataLoader``) decode each
sample and turn it into the views of its evaluation frame (:mod:`tips_bench.frames`); the main process
fits the views to the patch grid, encodes them in batches of equal size and yields, per image:

* ``patches_<i>`` / ``cls_<i>``: block ``i``'s patch map (D, h, w) and own CLS token (D,) per view;
* ``global_<name>``: each global embedding per view; ``text_dense``: text-aligned patch features;
* ``boxes`` (views, 4): each view's (y0, x0, y1, x1) in the resized image; ``resized_hw``, ``orig_hw``;
* the requested targets: at the original label size (``target_frame="original"``, where metrics are
  computed) or resized to the frame's resized image (``"input"``, for training probes on views).

With a fixed-shape frame (square or centre crop, whole image) the view axis is dropped and arrays stack
as (N, ...); otherwise every per-image array is ragged (a list, stored without padding by the cache).
Pairs (correspondence) store both images in a square frame, the query points in image a's input frame,
and image b's points, bounding box and size in its original frame (where PCK is defined).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from tips_bench.backbones.base import Backbone
from tips_bench.frames import Frame, map_points, resize_nearest
from tips_bench.precision import autocast
from tips_bench.tasks.base import FeatureRequest

SCALAR_TARGETS = ("label",)
#: Fill value of each target where a view is padded (oracle inputs): ignore label, no depth, no normal.
TARGET_FILL = {"seg": 255, "depth": 0.0, "depth_valid": False, "normals": 0.0, "normals_valid": False}
ORACLE_KEYS = tuple(TARGET_FILL)


def resolve_layers(backbone: Backbone, layers: str | tuple[int, ...] | list[int]) -> list[int]:
    """'last', 'last4', 'dense' (the definition's DPT layers) or explicit indices -> block indices."""
    n = backbone.num_layers
    if layers == "last":
        return [n - 1]
    if layers == "last4":
        return list(range(max(0, n - 4), n))
    if layers == "dense":
        return backbone.resolve_layers(backbone.spec.dense_blocks(n))
    return backbone.resolve_layers(list(layers))


class PreparedSplit(torch.utils.data.Dataset):
    """Items ``start:stop`` of a dataset turned into frame views and targets (runs inside workers)."""

    def __init__(self, dataset: Any, start: int, stop: int, frame: Frame, request: FeatureRequest):
        self.dataset, self.start, self.stop, self.frame, self.request = dataset, start, stop, frame, request

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[self.start + i]
        return self._pair(sample) if self.request.pair else self._single(sample)

    def _single(self, sample: dict) -> dict[str, Any]:
        image = np.asarray(sample["image"])
        views, boxes, resized = self.frame.prepare(image)
        out: dict[str, Any] = {"views": views, "boxes": np.asarray(boxes, np.int32),
                               "resized_hw": np.asarray(resized, np.int32),
                               "orig_hw": np.asarray(image.shape[:2], np.int32)}
        for key in self.request.targets:
            value = np.asarray(sample[key])
            if key in SCALAR_TARGETS:
                out[key] = value.astype(np.int64)
            elif self.request.target_frame == "input":
                out[key] = np.ascontiguousarray(resize_nearest(value, resized))
            else:
                out[key] = np.ascontiguousarray(value)
        if self.request.oracle:
            out["oracle"] = self._oracle_views(sample, boxes, resized)
        return out

    def _oracle_views(self, sample: dict, boxes: list, resized: tuple[int, int]) -> dict[str, Any]:
        """Ground truth aligned with each (fitted) view, for backbones that read it (the oracle)."""
        per_view: dict[str, Any] = {}
        for key in ORACLE_KEYS:
            if key in sample:
                full = resize_nearest(np.asarray(sample[key]), resized)
                per_view[key] = [self.frame.fit_target(full[y0:y1, x0:x1], TARGET_FILL[key])
                                 for y0, x0, y1, x1 in boxes]
        per_view["label"] = int(sample.get("label", -1))
        if "label_set" in sample:
            per_view["label_set"] = [int(c) for c in sample["label_set"]]
        per_view["captions"] = [str(c) for c in sample.get("captions", [])]
        per_view["domain"] = str(sample.get("domain", ""))
        return per_view

    def _pair(self, sample: dict) -> dict[str, Any]:
        k = self.request.max_points
        out: dict[str, Any] = {}
        valid = np.asarray(sample["points_valid"], dtype=bool)[:k]
        out["points_valid"] = _pad(valid, k, False)
        for side in ("a", "b"):
            image = np.asarray(sample[f"image_{side}"])
            views, _, resized = self.frame.prepare(image)
            out[f"image_{side}"] = views[0]
            points = np.asarray(sample[f"points_{side}"], np.float32)[:k]
            if side == "a":
                out["points_a"] = _pad(map_points(points, image.shape[:2], resized), k, 0.0)
            else:
                out["points_b"] = _pad(points, k, 0.0)  # original frame of b: PCK is defined there
                out["bbox_b"] = np.asarray(sample["bbox_b"], np.float32)
                out["orig_hw_b"] = np.asarray(image.shape[:2], np.int32)
                out["resized_hw_b"] = np.asarray(resized, np.int32)
            if self.request.oracle:
                fitted = self.frame.fitted_size(*resized)
                pts = map_points(points, image.shape[:2], resized)
                if self.frame.fit == "pad_center":  # shift by the padding; resize_up scales like the pixels
                    pts = pts + np.asarray([(fitted[1] - resized[1]) // 2, (fitted[0] - resized[0]) // 2], np.float32)
                else:
                    pts = map_points(pts, resized, fitted)
                out[f"oracle_{side}"] = {"points": _pad(pts, k, 0.0), "points_valid": out["points_valid"]}
        return out


def _pad(value: np.ndarray, k: int, fill: Any) -> np.ndarray:
    """Cut or pad (with ``fill``) the first axis to ``k`` (pairs have different numbers of keypoints)."""
    value = np.asarray(value)[:k]
    pad = np.full((k - len(value), *value.shape[1:]), fill, dtype=value.dtype)
    return np.concatenate([value, pad])


def _as_list(batch: list[dict]) -> list[dict]:
    return batch


class ViewEncoder:
    """Encodes views of any sizes: groups them by size, fits them to the patch grid, runs the backbone."""

    def __init__(self, backbone: Backbone, frame: Frame, request: FeatureRequest, batch_size: int,
                 precision: str = "fp32"):
        self.backbone, self.frame, self.request, self.batch_size = backbone, frame, request, batch_size
        self.precision = precision
        self.cuda = backbone.device.type == "cuda"
        self.layers = resolve_layers(backbone, request.layers) if request.layers != [] else []
        self.forward_items = 0

    def encode(self, views: list[np.ndarray], oracle: list[dict] | None = None) -> list[dict[str, np.ndarray]]:
        """Features of each view (uint8 (h, w, 3)), as fp16 numpy arrays keyed like the cache."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, v in enumerate(views):
            groups[v.shape[:2]].append(i)
        out: list[dict[str, np.ndarray]] = [{} for _ in views]
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                stacked = np.stack([views[i] for i in chunk])
                pixels = torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
                pixels = self.frame.fit_pixels(pixels, fill=self.backbone.spec.mean)
                if self.cuda:  # pinned host memory and an asynchronous copy overlap the transfer
                    pixels = pixels.pin_memory().to(self.backbone.device, non_blocking=True)
                targets = _stack_oracle([oracle[i] for i in chunk]) if oracle is not None else None
                with autocast(self.precision, self.backbone.device):
                    feats = self.backbone.encode_image(pixels, layers=self.layers or None,
                                                       text_dense=self.request.text_dense,
                                                       norm=self.request.layer_norm, targets=targets)
                self.forward_items += len(chunk)
                arrays = _feature_arrays(feats, self.layers, self.request)
                for j, i in enumerate(chunk):
                    out[i] = {name: value[j] for name, value in arrays.items()}
        return out


def _feature_arrays(feats, layers: list[int], request: FeatureRequest) -> dict[str, np.ndarray]:
    def half(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(torch.float16).cpu().numpy()

    out: dict[str, np.ndarray] = {}
    for i in layers:
        out[f"patches_{i}"] = half(feats.patches[i])
        if i in feats.layer_cls:
            out[f"cls_{i}"] = half(feats.layer_cls[i])
    if request.globals:
        for name, value in feats.globals.items():
            out[f"global_{name}"] = half(value)
    if request.text_dense:
        out["text_dense"] = half(feats.text_dense)
    return out


def _stack_oracle(items: list[dict]) -> dict[str, Any]:
    """View-aligned ground truth of one batch of equally sized views as tensors (lists for strings)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(values[0], int | float | bool):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def _split_oracle(per_image: dict[str, Any], n_views: int) -> list[dict[str, Any]]:
    """One image's oracle dict (lists per view for dense keys) -> one dict per view."""
    views = []
    for v in range(n_views):
        views.append({k: (val[v] if isinstance(val, list) and k in ORACLE_KEYS else val)
                      for k, val in per_image.items()})
    return views


def produce_batches(backbone: Backbone, dataset: Any, start: int, stop: int, frame: Frame, request: FeatureRequest,
                    batch_size: int, num_workers: int, counter: ViewEncoder | None = None
                    ) -> Iterator[dict[str, Any]]:
    """Yield the cache arrays of items ``start:stop``, ``batch_size`` images at a time (module docstring)."""
    encoder = counter or ViewEncoder(backbone, frame, request, batch_size)
    loader = torch.utils.data.DataLoader(
        PreparedSplit(dataset, start, stop, frame, request), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, persistent_workers=False, prefetch_factor=4 if num_workers else None,
        collate_fn=_as_list,
    )
    for items in loader:
        yield _pair_batch(encoder, items) if request.pair else _image_batch(encoder, items, frame, request)


def _image_batch(encoder: ViewEncoder, items: list[dict], frame: Frame, request: FeatureRequest) -> dict[str, Any]:
    views, owner = [], []
    oracle: list[dict] | None = [] if request.oracle else None
    for n, item in enumerate(items):
        views += list(item["views"])
        owner += [n] * len(item["views"])
        if oracle is not None:
            oracle += _split_oracle(item["oracle"], len(item["views"]))
    feats = encoder.encode(views, oracle)
    per_image: list[dict[str, list[np.ndarray]]] = [defaultdict(list) for _ in items]
    for n, f in zip(owner, feats, strict=True):
        for name, value in f.items():
            per_image[n][name].append(value)
    out: dict[str, Any] = {}
    names = list(per_image[0])
    for name in names:
        stacked = [np.stack(p[name]) for p in per_image]  # (views, ...) per image
        out[name] = np.stack([s[0] for s in stacked]) if frame.fixed_shape else stacked
    out["boxes"] = np.stack([it["boxes"] for it in items]) if frame.fixed_shape else [it["boxes"] for it in items]
    out["resized_hw"] = np.stack([it["resized_hw"] for it in items])
    out["orig_hw"] = np.stack([it["orig_hw"] for it in items])
    for key in request.targets:
        values = [it[key] for it in items]
        if key in SCALAR_TARGETS or (frame.fixed_shape and request.target_frame == "input"):
            out[key] = _narrow(key, np.stack(values))
        else:
            out[key] = [_narrow(key, v) for v in values]
    return out


def _pair_batch(encoder: ViewEncoder, items: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("a", "b"):
        oracle = [it[f"oracle_{side}"] for it in items] if encoder.request.oracle else None
        feats = encoder.encode([it[f"image_{side}"] for it in items], oracle)
        for name in feats[0]:
            out[f"{side}_{name}"] = np.stack([f[name] for f in feats])
    for key in ("points_a", "points_b", "points_valid", "bbox_b", "orig_hw_b", "resized_hw_b"):
        out[key] = np.stack([it[key] for it in items])
    return out


def _narrow(key: str, value: np.ndarray) -> np.ndarray:
    """Labels that fit in uint8 are stored as uint8 (a quarter of int32's bytes)."""
    if key == "seg" and value.max(initial=0) < 256 and value.min(initial=0) >= 0:
        return value.astype(np.uint8)
    return value


def bytes_per_item(embed_dim: int, grid: tuple[int, int], n_layers: int, views: float = 1.0,
                   target_pixels: int = 0) -> int:
    """Rough cache bytes per image (fp16 patch maps of every layer and view, plus targets), to size shards."""
    return int(2 * embed_dim * grid[0] * grid[1] * (n_layers + 1) * views + 16 * target_pixels)
