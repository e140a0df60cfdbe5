"""The ray caster: renders a scene's image, seg, depth, normals and instances, and matches two views."""

from __future__ import annotations

import math

import numpy as np

from tips_bench.data.synthetic.scene import (
    AMBIENT,
    DEPTH_AGREE_ABS,
    DEPTH_AGREE_REL,
    GROUND_COLOURS,
    NOISE_STD,
    PALETTE,
    SKIES,
    Scene,
    SceneObject,
)
from tips_bench.data.synthetic.shapes import _EPS, _rotate_yaw


def _object_pattern(obj: SceneObject, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """0/1 texture mask from the object's own coordinates (solid texture)."""
    if obj.texture == "plain":
        return np.zeros_like(px)
    lx, lz = _rotate_yaw(px - obj.position[0], pz - obj.position[2], obj.rotation)
    s = obj.radius / 2
    if obj.texture == "striped":
        return np.floor((py + 0.6 * lx) / s) % 2
    return (np.floor(lx / s) + np.floor(py / s) + np.floor(lz / s)) % 2


def _cast(
    scene: Scene, ox, oy, oz, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First hit of each ray: ``(t, hit_id)`` with hit_id 0 = sky, 1 = ground, 2 + i = object i."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = -oy / dy
        gx, gz = ox + tg * dx, oz + tg * dz
    on_ground = (dy < 0) & (tg > _EPS) & (gx * gx + gz * gz <= scene.ground_radius**2)
    t = np.where(on_ground, tg, np.inf)
    hit = on_ground.astype(np.int16)
    for i, obj in enumerate(scene.objects):
        ti = obj.geometry.intersect(obj, ox, oy, oz, dx, dy, dz)
        closer = ti < t
        t = np.where(closer, ti, t)
        hit[closer] = 2 + i
    return t, hit


def _hash01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell."""
    v = np.sin(a * 12.9898 + b * 78.233) * 43758.5453
    return v - np.floor(v)


def render_view(
    scene: Scene,
    K: np.ndarray,
    pose: np.ndarray,
    size: tuple[int, int],
    *,
    noise: float = NOISE_STD,
    rng: np.random.Generator | None = None,
    shadows: bool = True,
) -> dict[str, np.ndarray]:
    """Ray-cast ``scene`` through camera ``(K, pose)`` at ``size = (height, width)``.

    Returns ``image`` uint8 (H, W, 3), ``seg`` int64 (H, W), ``depth`` float32 (H, W) z-depth (0 on
    sky), ``normals`` float32 (H, W, 3) in the camera frame (0 on sky) and ``instance`` int16
    (H, W): the object's index in ``scene.objects``, -1 on ground and sky. ``rng`` seeds the pixel
    noise (default: a fixed seed).

    Measured on the 2-core dev machine: about 20 ms for a 224x224 view of a 4-object scene
    with shadows (13 ms without), noise included.
    """
    h, w = size
    K = np.asarray(K, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    rot, eye = pose[:3, :3], pose[:3, 3]
    kinv = np.linalg.inv(K)
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    cx = kinv[0, 0] * xs + kinv[0, 1] * ys + kinv[0, 2]
    cy = kinv[1, 1] * ys + kinv[1, 2]
    # Camera-frame rays have z = 1, so the ray parameter t of a hit is its z-depth.
    dx = rot[0, 0] * cx + rot[0, 1] * cy + rot[0, 2]
    dy = rot[1, 0] * cx + rot[1, 1] * cy + rot[1, 2]
    dz = rot[2, 0] * cx + rot[2, 1] * cy + rot[2, 2]
    t, hit = _cast(scene, eye[0], eye[1], eye[2], dx, dy, dz)

    n = h * w
    valid = hit > 0
    tv = np.where(valid, t, 0.0)
    px, py, pz = eye[0] + tv * dx, eye[1] + tv * dy, eye[2] + tv * dz
    normals = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    ground = hit == 1
    normals[ground] = (0.0, 1.0, 0.0)
    gx, gz = px[ground] / scene.ground_tile, pz[ground] / scene.ground_tile
    if scene.ground_texture == "checkered":
        shade = 1.0 + 0.16 * (2 * ((np.floor(gx) + np.floor(gz)) % 2) - 1)
    else:
        shade = 0.82 + 0.36 * _hash01(np.floor(gx * 4), np.floor(gz * 4))
    albedo[ground] = np.asarray(GROUND_COLOURS[scene.ground_colour]) * shade[:, None]
    for i, obj in enumerate(scene.objects):
        sel = hit == 2 + i
        if not sel.any():
            continue
        n_obj = obj.geometry.normals(obj, px[sel], py[sel], pz[sel])
        normals[sel] = n_obj
        # Texture is looked up slightly inside the surface so that flat faces lying on a cell
        # boundary of the solid texture do not flicker.
        inset = 1e-3 * obj.radius * n_obj
        pattern = _object_pattern(obj, px[sel] - inset[:, 0], py[sel] - inset[:, 1], pz[sel] - inset[:, 2])
        pattern = pattern[:, None]
        base = np.asarray(PALETTE[obj.colour])
        albedo[sel] = base + 0.3 * pattern if obj.colour == "black" else base * (1 - 0.45 * pattern)
    # Face the camera (closed surfaces seen from outside already do; this guards grazing cases).
    facing = normals[:, 0] * dx + normals[:, 1] * dy + normals[:, 2] * dz
    normals[facing > 0] *= -1

    light = np.asarray(scene.light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    lambert = np.clip(normals @ light, 0.0, None)
    if shadows and scene.objects:
        idx = np.flatnonzero(valid & (lambert > 0))
        sx, sy, sz = (p[idx] + 1e-4 * normals[idx, k] for k, p in enumerate((px, py, pz)))
        ldx, ldy, ldz = (np.full(len(idx), c) for c in light)
        blocked = np.zeros(len(idx), dtype=bool)
        for obj in scene.objects:
            blocked |= np.isfinite(obj.geometry.intersect(obj, sx, sy, sz, ldx, ldy, ldz))
        lambert[idx[blocked]] = 0.0
    rgb = albedo * (AMBIENT + (1 - AMBIENT) * lambert)[:, None]
    zenith, horizon = (np.asarray(c) for c in SKIES[scene.sky])
    sky = ~valid
    up = np.clip(dy[sky] / np.sqrt(dx[sky] ** 2 + dy[sky] ** 2 + dz[sky] ** 2) * 2.5, 0.0, 1.0)[:, None]
    rgb[sky] = horizon + (zenith - horizon) * up
    rgb = rgb * 255.0
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        rgb += rng.normal(0.0, noise, rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(h, w, 3)

    lut = np.array([0, 1, *(o.class_id for o in scene.objects)], dtype=np.int64)
    normals_cam = normals @ rot  # rows of R^T n
    return {
        "image": image,
        "seg": lut[hit].reshape(h, w),
        "depth": tv.astype(np.float32).reshape(h, w),
        "normals": normals_cam.astype(np.float32).reshape(h, w, 3),
        "instance": (hit.astype(np.int16) - 2).clip(-1, None).reshape(h, w),
    }


# --------------------------------------------------------------------------- correspondences


def match_views(
    scene: Scene,
    view_a: dict[str, np.ndarray],
    view_b: dict[str, np.ndarray],
    K_a: np.ndarray,
    pose_a: np.ndarray,
    K_b: np.ndarray,
    pose_b: np.ndarray,
    num_points: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric correspondences from view a to view b (outputs of :func:`render_view`).

    Samples object pixels (about three quarters) and ground pixels of a, unprojects them with a's
    depth, projects them into b and keeps those that land inside b, are not occluded there (an
    exact ray cast from b's centre), and whose nearest pixel in b shows the same object with a
    depth that agrees within ``DEPTH_AGREE_REL * z + DEPTH_AGREE_ABS``. Returns ``points_a``,
    ``points_b`` float32 (num_points, 2) in (x, y) and ``valid`` bool (num_points,), padded with
    zeros / False when fewer are found.
    """
    h, w = view_a["depth"].shape
    hb, wb = view_b["depth"].shape
    inst_a = view_a["instance"].ravel()
    obj_pix = np.flatnonzero(inst_a >= 0)
    gnd_pix = np.flatnonzero(view_a["seg"].ravel() == 1)
    obj_pix = rng.choice(obj_pix, min(len(obj_pix), 3 * num_points), replace=False)
    gnd_pix = rng.choice(gnd_pix, min(len(gnd_pix), 2 * num_points), replace=False)
    cand = np.concatenate([obj_pix, gnd_pix])
    is_obj = np.arange(len(cand)) < len(obj_pix)
    xa, ya = (cand % w).astype(np.float64), (cand // w).astype(np.float64)
    z = view_a["depth"].ravel()[cand].astype(np.float64)

    pa = np.stack([xa, ya, np.ones_like(xa)])
    world = np.asarray(pose_a)[:3, :3] @ (np.linalg.inv(K_a) @ pa * z) + np.asarray(pose_a)[:3, 3:4]
    rot_b, eye_b = np.asarray(pose_b)[:3, :3], np.asarray(pose_b)[:3, 3]
    cam_b = rot_b.T @ (world - eye_b[:, None])
    zb = cam_b[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = np.asarray(K_b) @ (cam_b / zb)
    xb, yb = proj[0], proj[1]
    ok = (zb > _EPS) & (xb >= 0) & (xb <= wb - 1) & (yb >= 0) & (yb <= hb - 1)

    # Exact visibility: the first hit along b's ray through the point must be the point itself.
    ray = rot_b @ (cam_b / np.where(ok, zb, 1.0))
    t_first, _ = _cast(scene, eye_b[0], eye_b[1], eye_b[2], ray[0], ray[1], ray[2])
    ok &= t_first >= zb * (1 - 1e-4) - 1e-4
    # Nearest-pixel agreement in b (rejects points straddling a silhouette).
    rb = np.rint(np.where(ok, yb, 0.0)).astype(np.int64)
    cb = np.rint(np.where(ok, xb, 0.0)).astype(np.int64)
    ok &= view_b["instance"][rb, cb] == inst_a[cand]
    ok &= np.abs(view_b["depth"][rb, cb] - zb) <= DEPTH_AGREE_REL * zb + DEPTH_AGREE_ABS

    good_obj, good_gnd = np.flatnonzero(ok & is_obj), np.flatnonzero(ok & ~is_obj)
    n_obj = min(len(good_obj), math.ceil(0.75 * num_points))
    chosen = np.concatenate([good_obj[:n_obj], good_gnd, good_obj[n_obj:]])[:num_points]
    points_a = np.zeros((num_points, 2), dtype=np.float32)
    points_b = np.zeros((num_points, 2), dtype=np.float32)
    valid = np.zeros(num_points, dtype=bool)
    k = len(chosen)
    points_a[:k] = np.stack([xa[chosen], ya[chosen]], axis=-1)
    points_b[:k] = np.stack([xb[chosen], yb[chosen]], axis=-1)
    valid[:k] = True
    return points_a, points_b, valid


def object_bbox(instance: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) float32 of all object pixels (pixel-centre coordinates); whole image if none."""
    rows, cols = np.nonzero(instance >= 0)
    if len(rows) == 0:
        h, w = instance.shape
        return np.array([0, 0, w - 1, h - 1], dtype=np.float32)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)
