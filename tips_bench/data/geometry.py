"""Small camera-geometry helpers shared by the 3D datasets (NYUv2, NAVI).

Conventions (the ones of :mod:`tips_bench.data.base`):

* camera frame: x right, y down, z forward (into the scene);
* pixel coordinates: the centre of the pixel in row ``i``, column ``j`` is ``(x, y) = (j, i)``, and the
  intrinsics ``K`` map camera points to those coordinates (``[x, y, 1]^T ~ K X``);
* depth is the z coordinate of the surface point (not the distance along the ray);
* surface normals are unit vectors in the camera frame that point towards the camera
  (``dot(n, X) < 0`` for the surface point ``X``).
"""

from __future__ import annotations

import numpy as np


def pixel_rays(height: int, width: int, K: np.ndarray) -> np.ndarray:
    """Rays ``K^-1 [x, y, 1]`` of every pixel centre, shape (H, W, 3), with z = 1."""
    K = np.asarray(K, dtype=np.float64)
    ys, xs = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    return pix @ np.linalg.inv(K).T


def unproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame 3D points (H, W, 3) of a z-depth map."""
    depth = np.asarray(depth, dtype=np.float64)
    return pixel_rays(depth.shape[0], depth.shape[1], K) * depth[..., None]


def project(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and depths (N,) of camera-frame points (N, 3)."""
    points = np.asarray(points, dtype=np.float64)
    uvw = points @ np.asarray(K, dtype=np.float64).T
    z = points[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = uvw[:, :2] / uvw[:, 2:3]
    return xy, z


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points (N, 3)."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle in degrees of the relative rotation ``R_a R_b^T``."""
    R = np.asarray(R_a, dtype=np.float64) @ np.asarray(R_b, dtype=np.float64).T
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def normals_from_depth(
    depth: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Surface normals of a depth map, the way the probing literature derives them.

    Every pixel is unprojected with ``K``; the normal of an interior pixel is the normalised sum of
    the four cross products of its neighbour differences (left x top, top x right, right x bottom,
    bottom x left), as probe3d's ``compute_normal`` does, then oriented towards the camera.

    ``valid`` marks pixels with measured depth (default: finite depth > 0). A normal is valid only
    where the pixel and its four neighbours are valid; border pixels are never valid.
    Returns float32 normals (H, W, 3), zero where invalid, and the bool validity mask (H, W).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    if valid is None:
        valid = np.isfinite(depth) & (depth > 0)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(depth)
    normals = np.zeros((h, w, 3), dtype=np.float32)
    out_valid = np.zeros((h, w), dtype=bool)
    if h < 3 or w < 3:
        return normals, out_valid

    points = unproject(np.where(valid, depth, 0.0), K)
    centre = points[1:-1, 1:-1]
    left = points[1:-1, :-2] - centre
    right = points[1:-1, 2:] - centre
    top = points[:-2, 1:-1] - centre
    bottom = points[2:, 1:-1] - centre
    n = np.cross(left, top) + np.cross(top, right) + np.cross(right, bottom) + np.cross(bottom, left)

    ok = valid[1:-1, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:] & valid[:-2, 1:-1] & valid[2:, 1:-1]
    length = np.linalg.norm(n, axis=-1)
    ok &= length > 1e-12
    n = n / np.where(ok, length, 1.0)[..., None]
    # Orient towards the camera: the normal and the viewing ray point in opposite directions.
    flip = np.sum(n * centre, axis=-1) > 0
    n[flip] *= -1.0
    n[~ok] = 0.0
    normals[1:-1, 1:-1] = n.astype(np.float32)
    out_valid[1:-1, 1:-1] = ok
    return normals, out_valid
