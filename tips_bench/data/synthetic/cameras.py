"""Cameras: pinhole intrinsics and level poses looking at, or orbiting, a target."""

from __future__ import annotations

import math

import numpy as np

from tips_bench.data.synthetic.scene import Scene


def make_intrinsics(size: tuple[int, int], fov_deg: float = 50.0) -> np.ndarray:
    """Pinhole K (float64) for an image of ``size = (height, width)`` and horizontal field of view."""
    h, w = size
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (float64 4x4) of an OpenCV camera at ``eye`` looking at ``target``.

    The camera is level: its x axis is horizontal, its y axis points down as much as possible.
    """
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def orbit_pose(target: np.ndarray, distance: float, azimuth: float, elevation: float) -> np.ndarray:
    """Pose of a camera on a sphere around ``target`` (angles in radians; azimuth 0 = on ``+z``)."""
    target = np.asarray(target, dtype=np.float64)
    offset = np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )
    return look_at(target + distance * offset, target)


def _fit_distance(scene: Scene, target: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> float:
    """Distance at which the objects' bounding spheres roughly fit the narrower field of view."""
    h, w = size
    half_fov = min(math.atan((w / 2) / K[0, 0]), math.atan((h / 2) / K[1, 1]))
    extent = max(
        (
            float(np.linalg.norm(o.centre - target)) + math.hypot(o.bounding_radius, o.height / 2)
            for o in scene.objects
        ),
        default=1.0,
    )
    return extent / math.tan(half_fov)


def scene_camera(
    rng: np.random.Generator, scene: Scene, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Random K and pose viewing ``scene`` from a random azimuth and elevation.

    Returns ``(K, pose, orbit)`` where ``orbit`` holds target, distance, azimuth and elevation so
    that a second view can be placed around the same target.
    """
    K = make_intrinsics(size, float(rng.uniform(45.0, 55.0)))
    pts = np.array([o.position for o in scene.objects]) if scene.objects else np.zeros((1, 3))
    target = 0.5 * pts.mean(axis=0) + np.array([0.0, 0.3, 0.0])
    distance = float(np.clip(_fit_distance(scene, target, K, size) * rng.uniform(0.95, 1.15), 3.4, 4.6))
    orbit = {
        "distance": distance,
        "azimuth": float(rng.uniform(0, 2 * math.pi)),
        "elevation": float(rng.uniform(math.radians(18), math.radians(50))),
    }
    pose = orbit_pose(target, orbit["distance"], orbit["azimuth"], orbit["elevation"])
    return K, pose, {**orbit, "tx": target[0], "ty": target[1], "tz": target[2]}
