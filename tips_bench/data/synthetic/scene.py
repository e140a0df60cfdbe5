"""The scene description: palettes and constants, objects on a ground disc, and random scenes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tips_bench.data.synthetic.shapes import Shape, get_shape

SEG_CLASSES: tuple[str, ...] = ("sky", "ground", "sphere", "cube", "cylinder", "cone")
OBJECT_CLASSES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")

# Object colours, linear RGB in [0, 1]; the names appear in captions.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.62, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.52, 0.20, 0.70),
    "orange": (0.98, 0.52, 0.08),
    "white": (0.93, 0.93, 0.93),
    "black": (0.08, 0.08, 0.08),
    "pink": (0.95, 0.52, 0.70),
    "cyan": (0.10, 0.75, 0.80),
}
GROUND_COLOURS: dict[str, tuple[float, float, float]] = {
    "grey": (0.50, 0.50, 0.50),
    "brown": (0.45, 0.32, 0.20),
    "beige": (0.74, 0.67, 0.54),
}
GROUND_TEXTURES: tuple[str, ...] = ("checkered", "speckled")
# Sky gradient: (zenith colour, horizon colour).
SKIES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "blue": ((0.30, 0.50, 0.88), (0.75, 0.85, 0.95)),
    "grey": ((0.55, 0.58, 0.62), (0.85, 0.86, 0.87)),
    "dusk": ((0.28, 0.28, 0.52), (0.95, 0.70, 0.50)),
}

GROUND_RADIUS = 3.8
DEPTH_RANGE: tuple[float, float] = (0.5, 10.0)
AMBIENT = 0.35
NOISE_STD = 2.0  # pixel noise, in uint8 levels
# A correspondence is kept only if b's rendered depth at the nearest pixel agrees within this.
DEPTH_AGREE_REL = 0.03
DEPTH_AGREE_ABS = 0.02

_SMALL_RADIUS = (0.22, 0.34)
_LARGE_RADIUS = (0.45, 0.62)


@dataclass(frozen=True)
class SceneObject:
    """One shape resting on the ground.

    ``position`` is the world point ``(x, 0, z)`` under the object's centre; ``radius`` its
    horizontal half extent (sphere radius, half side of the cube, base radius of cylinder and
    cone); ``height`` its vertical extent; ``rotation`` a yaw about world ``+y`` in radians (it
    turns the cube and every texture).
    """

    shape: str
    colour: str
    size: str
    position: tuple[float, float, float]
    radius: float
    height: float
    rotation: float = 0.0
    texture: str = "plain"

    @property
    def class_id(self) -> int:
        """Index of the shape in ``SEG_CLASSES``."""
        return SEG_CLASSES.index(self.shape)

    @property
    def geometry(self) -> Shape:
        """The :class:`~tips_bench.data.synthetic.shapes.Shape` named by ``shape``."""
        return get_shape(self.shape)

    @property
    def centre(self) -> np.ndarray:
        """World centre of the object's bounding box."""
        return np.array([self.position[0], self.height / 2, self.position[2]])

    @property
    def bounding_radius(self) -> float:
        """Radius of the footprint's enclosing circle."""
        return self.radius * self.geometry.footprint


@dataclass(frozen=True)
class Scene:
    """A set of objects on a ground disc under a sky, lit by one directional light.

    ``light_dir`` points from the scene towards the light (world frame, unit length).
    """

    objects: tuple[SceneObject, ...]
    ground_colour: str = "grey"
    ground_texture: str = "checkered"
    ground_tile: float = 0.5
    sky: str = "blue"
    light_dir: tuple[float, float, float] = (0.40, 0.80, 0.45)
    ground_radius: float = GROUND_RADIUS


def make_object(
    rng: np.random.Generator,
    shape: str,
    colour: str | None = None,
    position: tuple[float, float] = (0.0, 0.0),
    size: str | None = None,
) -> SceneObject:
    """A random object of ``shape`` standing at ground point ``position = (x, z)``."""
    size = size or ("small" if rng.random() < 0.5 else "large")
    lo, hi = _SMALL_RADIUS if size == "small" else _LARGE_RADIUS
    radius = float(rng.uniform(lo, hi))
    height = 2 * radius * float(rng.uniform(*get_shape(shape).aspect))
    colour = colour or str(rng.choice(list(PALETTE)))
    return SceneObject(
        shape=shape,
        colour=colour,
        size=size,
        position=(float(position[0]), 0.0, float(position[1])),
        radius=radius,
        height=height,
        rotation=float(rng.uniform(0, 2 * math.pi)),
        texture=str(rng.choice(TEXTURES)),
    )


def make_scene(rng: np.random.Generator, num_objects: int | None = None, region: float = 1.5) -> Scene:
    """A random scene of ``num_objects`` (default 2 to 4) non-overlapping objects.

    Objects stand within ``region`` metres of the origin; no two share both shape and colour, so
    "the blue sphere" names one object. An object that cannot be placed after 50 tries is dropped.
    """
    n = int(rng.integers(2, 5)) if num_objects is None else num_objects
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    for _ in range(n):
        while True:
            shape, colour = str(rng.choice(OBJECT_CLASSES)), str(rng.choice(list(PALETTE)))
            if (shape, colour) not in used:
                break
        used.add((shape, colour))
        candidate = make_object(rng, shape, colour)
        for _ in range(50):
            rad, ang = region * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            x, z = rad * math.cos(ang), rad * math.sin(ang)
            if all(
                math.hypot(x - o.position[0], z - o.position[2])
                > candidate.bounding_radius + o.bounding_radius + 0.1
                for o in objects
            ):
                objects.append(_moved(candidate, x, z))
                break
    light_az, light_el = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(40), math.radians(70))
    return Scene(
        objects=tuple(objects),
        ground_colour=str(rng.choice(list(GROUND_COLOURS))),
        ground_texture=str(rng.choice(GROUND_TEXTURES)),
        ground_tile=float(rng.uniform(0.35, 0.7)),
        sky=str(rng.choice(list(SKIES))),
        light_dir=(
            math.cos(light_el) * math.sin(light_az),
            math.sin(light_el),
            math.cos(light_el) * math.cos(light_az),
        ),
    )


def _moved(obj: SceneObject, x: float, z: float) -> SceneObject:
    return SceneObject(
        obj.shape, obj.colour, obj.size, (x, 0.0, z), obj.radius, obj.height, obj.rotation, obj.texture
    )

