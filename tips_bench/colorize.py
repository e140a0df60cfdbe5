"""Turn dense maps into RGB images: label palettes, depth colour maps, normals, and a PCA of patch features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INVALID_RGB = (0, 0, 0)


def label_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 distinct colours: the bit-interleaving palette used by PASCAL VOC, without its black."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        code, rgb = index + 1, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        out[index] = rgb
    return out


def label_colors(labels: np.ndarray, num_classes: int | None = None, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 of an integer label map; negative and ``ignore_index`` pixels are black."""
    labels = np.asarray(labels).astype(np.int64)
    valid = (labels >= 0) & (labels != ignore_index)
    n = int(num_classes or (labels[valid].max() + 1 if valid.any() else 1))
    palette = label_palette(max(n, 1))
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    out[valid] = palette[np.clip(labels[valid], 0, len(palette) - 1)]
    return out


def depth_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """A shared display range: the 2nd and 98th percentiles of the valid (finite, > 0) values of all maps."""
    values = np.concatenate([m[np.isfinite(m) & (m > 0)].ravel() for m in maps] or [np.zeros(0)])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [2, 98])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def depth_colors(depth: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """(H, W, 3) uint8 of a depth map scaled to [lo, hi] (turbo: near is dark blue, far is red); invalid is black."""
    from matplotlib import colormaps

    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = np.clip((np.where(valid, depth, lo) - lo) / (hi - lo), 0.0, 1.0)
    rgb = (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)
    rgb[~valid] = INVALID_RGB
    return rgb


def normal_colors(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of unit normals: (n + 1) / 2 per axis; zero-length or non-finite normals are black."""
    normals = np.asarray(normals, dtype=np.float64)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = np.isfinite(norm[..., 0]) & (norm[..., 0] > 1e-6)
    unit = np.where(valid[..., None], normals / np.where(norm > 1e-6, norm, 1.0), 0.0)
    rgb = ((unit + 1.0) * 0.5 * 255).round().clip(0, 255).astype(np.uint8)
    rgb[~valid] = INVALID_RGB
    return rgb


def pca_rgb(features: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(h, w, 3) uint8 per (D, h, w) feature map: the 3 leading principal components, fitted jointly.

    One PCA over the patches of every map, so colours mean the same in all of them. Each component's
    sign makes its largest loading positive (deterministic colours), and each is scaled to [0, 255]
    between its 1st and 99th percentile. Fewer than 3 dimensions leave the remaining channels black.
    """
    if not features:
        return []
    dims = {f.shape[0] for f in features}
    if len(dims) != 1:
        raise ValueError(f"feature maps of different widths {sorted(dims)} cannot share one PCA")
    flat = [np.asarray(f, dtype=np.float64).reshape(f.shape[0], -1).T for f in features]
    stacked = np.concatenate(flat)
    stacked = np.nan_to_num(stacked)
    mean = stacked.mean(axis=0)
    centred = stacked - mean
    k = min(3, centred.shape[1])
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: the last columns lead
    components = vectors[:, ::-1][:, :k].T
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    projected = centred @ components.T
    lo, hi = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    scaled = np.clip((projected - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    rgb = np.zeros((len(stacked), 3), dtype=np.uint8)
    rgb[:, :k] = (scaled * 255).round().astype(np.uint8)
    out, start = [], 0
    for f in features:
        n = f.shape[1] * f.shape[2]
        out.append(rgb[start:start + n].reshape(f.shape[1], f.shape[2], 3))
        start += n
    return out


def upscale(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w, 3) image to (height, width, 3) (patch maps to image size)."""
    rows = (np.arange(height) * rgb.shape[0] // height).clip(0, rgb.shape[0] - 1)
    cols = (np.arange(width) * rgb.shape[1] // width).clip(0, rgb.shape[1] - 1)
    return rgb[rows][:, cols]
