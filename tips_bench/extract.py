"""The cache's fill step: decode and resize in worker processes, run the backbone, store fp16.

This is the only place the backbone runs on images. Decoding, resizing and target resizing
happen in ``torch.utils.data.DataLoader`` workers so that the backbone is kept busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from tips_bench.backbones.base import Backbone
from tips_bench.images import resize_uint8
from tips_bench.tasks.base import FeatureRequest

DENSE_TARGETS = {"seg": Image.Resampling.NEAREST, "depth": Image.Resampling.NEAREST,
                 "depth_valid": Image.Resampling.NEAREST, "normals_valid": Image.Resampling.NEAREST}
SCALAR_TARGETS = ("label",)


def resolve_layers(backbone: Backbone, layers: str | tuple[int, ...]) -> list[int]:
    """'last', 'last4', 'dense' (the definition's layer set) or explicit indices -> block indices."""
    n = backbone.num_layers
    if layers == "last":
        return [n - 1]
    if layers == "last4":
        return list(range(max(0, n - 4), n))
    if layers == "dense":
        chosen = [i for i in backbone.spec.dense_layers if -n <= i < n] or [n - 1]
        return backbone.resolve_layers(chosen)
    return backbone.resolve_layers(list(layers))


def _resize_target(value: np.ndarray, key: str, size: tuple[int, int]) -> np.ndarray:
    if value.shape[:2] == tuple(size):
        return value
    if key == "normals":
        channels = [_resize_target(value[..., c], "depth", size) for c in range(3)]
        return np.stack(channels, axis=-1)
    mode = DENSE_TARGETS.get(key, Image.Resampling.NEAREST)
    if value.dtype == bool:
        return np.asarray(Image.fromarray(value.astype(np.uint8)).resize(size[::-1], mode)).astype(bool)
    if value.dtype in (np.int64, np.int32):
        return np.asarray(Image.fromarray(value.astype(np.int32)).resize(size[::-1], mode)).astype(np.int64)
    return np.asarray(Image.fromarray(value.astype(np.float32)).resize(size[::-1], mode))


def _scale_points(points: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Map (x, y) pixel-centre coordinates between image sizes (centres at integer positions)."""
    sx, sy = dst[1] / src[1], dst[0] / src[0]
    out = points.astype(np.float32).copy()
    out[:, 0] = (out[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = (out[:, 1] + 0.5) * sy - 0.5
    return out


class PreparedSplit(torch.utils.data.Dataset):
    """Items ``start:stop`` of a dataset, resized for the backbone (runs inside workers)."""

    def __init__(self, dataset: Any, start: int, stop: int, size: tuple[int, int], request: FeatureRequest):
        self.dataset, self.start, self.stop, self.size, self.request = dataset, start, stop, size, request

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        # writable copies: decoded PIL arrays are read-only and torch's collate warns about them
        return {k: np.require(v, requirements="W") for k, v in self._prepare(self.dataset[self.start + i]).items()}

    def _prepare(self, sample: dict) -> dict[str, np.ndarray]:
        if self.request.pair:
            out = {}
            k = self.request.max_points
            for side in ("a", "b"):
                img = sample[f"image_{side}"]
                out[f"image_{side}"] = resize_uint8(img, self.size)
                points = _scale_points(sample[f"points_{side}"], img.shape[:2], self.size)[:k]
                out[f"points_{side}"] = np.concatenate([points, np.zeros((k - len(points), 2), np.float32)])
            valid = np.asarray(sample["points_valid"], dtype=bool)[:k]
            out["points_valid"] = np.concatenate([valid, np.zeros(k - len(valid), bool)])  # pairs differ in count
            box = np.asarray(sample["bbox_b"], dtype=np.float32).copy()
            src = sample["image_b"].shape[:2]
            box[[0, 2]] *= self.size[1] / src[1]
            box[[1, 3]] *= self.size[0] / src[0]
            out["bbox_b"] = box
            return out
        out = {"image": resize_uint8(sample["image"], self.size)}
        for key in self.request.targets:
            if key in SCALAR_TARGETS:
                out[key] = np.asarray(sample[key], dtype=np.int64)
            else:
                out[key] = _resize_target(np.asarray(sample[key]), key, self.size)
        return out


def _images(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return batch[key].permute(0, 3, 1, 2).float().div_(255.0)


def _features(backbone: Backbone, pixels: torch.Tensor, layers: list[int], request: FeatureRequest,
              prefix: str = "") -> dict[str, np.ndarray]:
    feats = backbone.encode_image(pixels, layers=layers, text_dense=request.text_dense)
    out: dict[str, np.ndarray] = {}
    for i in layers:
        out[f"{prefix}patches_{i}"] = feats.patches[i].to(torch.float16).cpu().numpy()
    if request.globals:
        for name, value in feats.globals.items():
            out[f"{prefix}global_{name}"] = value.to(torch.float16).cpu().numpy()
    if request.text_dense:
        out[f"{prefix}text_dense"] = feats.text_dense.to(torch.float16).cpu().numpy()
    return out


def produce_batches(backbone: Backbone, dataset: Any, start: int, stop: int, size: tuple[int, int],
                    request: FeatureRequest, batch_size: int, num_workers: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield the cache arrays for items ``start:stop``: fp16 features plus the requested targets."""
    layers = resolve_layers(backbone, request.layers)
    loader = torch.utils.data.DataLoader(
        PreparedSplit(dataset, start, stop, size, request), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )
    for batch in loader:
        if request.pair:
            out = _features(backbone, _images(batch, "image_a"), layers, request, "a_")
            out |= _features(backbone, _images(batch, "image_b"), layers, request, "b_")
            out |= {k: batch[k].numpy() for k in ("points_a", "points_b", "points_valid", "bbox_b")}
        else:
            out = _features(backbone, _images(batch, "image"), layers, request)
            for key in request.targets:
                value = batch[key].numpy()
                out[key] = value.astype(np.uint8) if key == "seg" and value.max(initial=0) < 256 else value
        yield out


def bytes_per_item(backbone_dim: int, grid: tuple[int, int], n_layers: int, size: tuple[int, int]) -> int:
    """Rough cache bytes per item, used to size shards."""
    return 2 * backbone_dim * grid[0] * grid[1] * (n_layers + 1) + 16 * size[0] * size[1]
