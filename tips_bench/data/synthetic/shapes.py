"""The object shapes: one class per shape with its ray intersection, surface normals and loose names.

Every shape rests on the ground at its object's ``position``; ``radius`` is its horizontal half
extent and ``height`` its vertical extent (see :class:`~tips_bench.data.synthetic.scene.SceneObject`).
Shapes register themselves in :data:`SHAPES` under the name that scene objects carry in ``shape``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from tips_bench.data.synthetic.scene import SceneObject

_EPS = 1e-6


def _rotate_yaw(x: np.ndarray, z: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """World-to-local horizontal components for an object turned by ``angle`` about +y."""
    c, s = math.cos(angle), math.sin(angle)
    return c * x - s * z, s * x + c * z


def _first_valid(t0: np.ndarray, t1: np.ndarray, ok0: np.ndarray, ok1: np.ndarray) -> np.ndarray:
    return np.minimum(np.where(ok0 & (t0 > _EPS), t0, np.inf), np.where(ok1 & (t1 > _EPS), t1, np.inf))


class Shape:
    """How one kind of shape is hit by rays, shaded and named.

    Subclasses fill ``name``, ``aspect`` (range of ``height / (2 * radius)`` drawn for a new object),
    ``footprint`` (enclosing-circle radius of the footprint over ``radius``) and ``synonyms`` (loose
    names for alt-text captions), and implement :meth:`_hit` and :meth:`_normal` in the object's frame
    (origin on the ground under its centre, world axes).
    """

    name: ClassVar[str]
    aspect: ClassVar[tuple[float, float]]
    footprint: ClassVar[float] = 1.0
    synonyms: ClassVar[tuple[str, ...]]

    def intersect(self, obj: SceneObject, ox, oy, oz, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit of rays ``o + t d`` with ``obj`` (``inf`` on a miss).

        Bottom faces are left out: they lie on the ground and face away from every camera and light.
        """
        ox, oz = ox - obj.position[0], oz - obj.position[2]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._hit(obj, ox, oy, oz, dx, dy, dz)

    def normals(self, obj: SceneObject, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
        """Outward unit world normals (N, 3) at surface points of ``obj``."""
        n = self._normal(obj, px - obj.position[0], py, pz - obj.position[2])
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)

    def describe(self, rng: np.random.Generator) -> str:
        """A loose name for the shape, as web alt-text would use."""
        return str(rng.choice(self.synonyms))

    def _hit(self, obj: SceneObject, ox, oy, oz, dx, dy, dz) -> np.ndarray:
        raise NotImplementedError

    def _normal(self, obj: SceneObject, x: np.ndarray, py: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


SHAPES: dict[str, Shape] = {}


def register_shape(cls: type[Shape]) -> type[Shape]:
    """Class decorator: make ``cls`` the shape named ``cls.name``."""
    SHAPES[cls.name] = cls()
    return cls


def get_shape(name: str) -> Shape:
    """The registered shape called ``name``."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; expected one of {tuple(SHAPES)}")
    return SHAPES[name]


@register_shape
class Sphere(Shape):
    name = "sphere"
    aspect = (1.0, 1.0)
    synonyms = ("ball", "sphere", "orb", "ball")

    def _hit(self, obj, ox, oy, oz, dx, dy, dz):
        r = obj.radius
        oy = oy - r
        a = dx * dx + dy * dy + dz * dz
        b = ox * dx + oy * dy + oz * dz
        disc = b * b - a * (ox * ox + oy * oy + oz * oz - r * r)
        sq = np.sqrt(np.maximum(disc, 0.0))
        ok = disc >= 0
        return _first_valid((-b - sq) / a, (-b + sq) / a, ok, ok)

    def _normal(self, obj, x, py, z):
        return np.stack([x, py - obj.radius, z], axis=-1)


@register_shape
class Cube(Shape):
    """A box of half side ``radius`` and height ``height``, turned by the object's ``rotation``."""

    name = "cube"
    aspect = (0.85, 1.15)
    footprint = math.sqrt(2.0)
    synonyms = ("cube", "box", "block", "cube")

    def _hit(self, obj, ox, oy, oz, dx, dy, dz):
        r, h = obj.radius, obj.height
        lx, lz = _rotate_yaw(ox, oz, obj.rotation)
        ldx, ldz = _rotate_yaw(dx, dz, obj.rotation)
        near, far = None, None
        for o, d, half in ((lx, ldx, r), (oy - h / 2, dy, h / 2), (lz, ldz, r)):
            inv = 1.0 / d
            t0, t1 = (-half - o) * inv, (half - o) * inv
            lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
        return np.where((near <= far) & (near > _EPS), near, np.inf)

    def _normal(self, obj, x, py, z):
        r, h = obj.radius, obj.height
        lx, lz = _rotate_yaw(x, z, obj.rotation)
        local = np.stack([lx / r, (py - h / 2) / (h / 2), lz / r], axis=-1)
        axis = np.argmax(np.abs(local), axis=-1)
        nl = np.zeros_like(local)
        rows = np.arange(len(local))
        nl[rows, axis] = np.sign(local[rows, axis])
        c, s = math.cos(obj.rotation), math.sin(obj.rotation)
        return np.stack([c * nl[:, 0] + s * nl[:, 2], nl[:, 1], -s * nl[:, 0] + c * nl[:, 2]], axis=-1)


@register_shape
class Cylinder(Shape):
    """An upright cylinder with a top cap."""

    name = "cylinder"
    aspect = (0.8, 1.6)
    synonyms = ("cylinder", "can", "tube", "cylinder")

    def _hit(self, obj, ox, oy, oz, dx, dy, dz):
        r, h = obj.radius, obj.height
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - r * r)
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0, t1 = (-b - sq) / a, (-b + sq) / a
        y0, y1 = oy + t0 * dy, oy + t1 * dy
        ok = disc >= 0
        side = _first_valid(t0, t1, ok & (y0 >= 0) & (y0 <= h), ok & (y1 >= 0) & (y1 <= h))
        tc = (h - oy) / dy
        xc, zc = ox + tc * dx, oz + tc * dz
        cap = np.where((tc > _EPS) & (xc * xc + zc * zc <= r * r), tc, np.inf)
        return np.minimum(side, cap)

    def _normal(self, obj, x, py, z):
        h = obj.height
        cap = py >= h - 1e-7 * max(h, 1.0)
        return np.where(cap[:, None], [0.0, 1.0, 0.0], np.stack([x, np.zeros_like(x), z], axis=-1))


@register_shape
class Cone(Shape):
    """An upright cone, apex at ``height``."""

    name = "cone"
    aspect = (1.0, 1.8)
    synonyms = ("cone", "cone", "cones", "traffic cone")

    def _hit(self, obj, ox, oy, oz, dx, dy, dz):
        r, h = obj.radius, obj.height
        k2 = (r / h) ** 2
        q = h - oy
        a = dx * dx + dz * dz - k2 * dy * dy
        b = ox * dx + oz * dz + k2 * q * dy
        disc = b * b - a * (ox * ox + oz * oz - k2 * q * q)
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0, t1 = (-b - sq) / a, (-b + sq) / a
        y0, y1 = oy + t0 * dy, oy + t1 * dy
        ok = disc >= 0
        return _first_valid(t0, t1, ok & (y0 >= 0) & (y0 <= h), ok & (y1 >= 0) & (y1 <= h))

    def _normal(self, obj, x, py, z):
        # gradient of x^2 + z^2 - (r/h)^2 (h - y)^2
        r, h = obj.radius, obj.height
        return np.stack([x, (r / h) ** 2 * (h - py), z], axis=-1)
