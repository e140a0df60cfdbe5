"""Captions of a rendered view: noisy alt-text and exact spatial descriptions from the scene geometry."""

from __future__ import annotations

import numpy as np

from tips_bench.data.synthetic.scene import Scene, SceneObject

_FILLERS = (
    "photo", "img", "3d render", "stock photo", "toy", "toys", "hd", "free", "wallpaper", "clipart",
    "render", "geometry", "shapes", "kids", "cgi", "background",
)  # fmt: skip
_TEXTURE_WORDS = {"plain": "", "striped": "striped", "checkered": "checkered"}


def spatial_relation(a_cam: np.ndarray, b_cam: np.ndarray) -> str:
    """Where point a lies relative to point b, both in the camera frame.

    "left of"/"right of" when the lateral (x) offset dominates, else "in front of"/"behind"
    (smaller/larger z).
    """
    dx, dz = float(a_cam[0] - b_cam[0]), float(a_cam[2] - b_cam[2])
    if abs(dx) >= abs(dz):
        return "left of" if dx < 0 else "right of"
    return "in front of" if dz < 0 else "behind"


def visible_objects(scene: Scene, instance: np.ndarray, min_pixels: int | None = None) -> list[int]:
    """Indices of objects covering at least ``min_pixels`` pixels (default 0.1% of the image)."""
    min_pixels = max(10, instance.size // 1000) if min_pixels is None else min_pixels
    counts = np.bincount(instance[instance >= 0].ravel(), minlength=len(scene.objects))
    return [i for i in range(len(scene.objects)) if counts[i] >= min_pixels]


def _phrase(obj: SceneObject) -> str:
    words = [obj.size, obj.colour, _TEXTURE_WORDS[obj.texture], obj.shape]
    return "a " + " ".join(w for w in words if w)


def long_caption(
    scene: Scene, pose: np.ndarray, visible: list[int] | None = None, rng: np.random.Generator | None = None
) -> str:
    """Exact spatial description, e.g. "a large red cube left of a small blue sphere, and a green
    striped cone behind the blue sphere, on a grey checkered floor".

    Each mentioned object (``visible``, default all, in random order if ``rng`` is given) is related
    to the one mentioned before it by :func:`spatial_relation` of their camera-frame centres.
    """
    order = list(range(len(scene.objects))) if visible is None else list(visible)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    floor = f"{scene.ground_colour} {scene.ground_texture} floor"
    if not order:
        return f"an empty {floor}"
    pose = np.asarray(pose, dtype=np.float64)
    cam = {i: pose[:3, :3].T @ (scene.objects[i].centre - pose[:3, 3]) for i in order}
    first = scene.objects[order[0]]
    parts = [_phrase(first)]
    if len(order) > 1:
        second = scene.objects[order[1]]
        parts[0] += f" {spatial_relation(cam[order[0]], cam[order[1]])} {_phrase(second)}"
        for prev, cur in zip(order[1:], order[2:], strict=False):
            p, c = scene.objects[prev], scene.objects[cur]
            rel = spatial_relation(cam[cur], cam[prev])
            parts.append(f"and {_phrase(c)} {rel} the {p.colour} {p.shape}")
    return ", ".join(parts) + f", on a {floor}"


def short_caption(scene: Scene, rng: np.random.Generator, visible: list[int] | None = None) -> str:
    """Noisy alt-text: a few of the objects under loose names, filler words, maybe a typo."""
    order = list(range(len(scene.objects))) if visible is None else list(visible)
    words: list[str] = []
    kept = [i for i in order if rng.random() < 0.7] or order[:1]
    for i in kept:
        obj = scene.objects[i]
        name = obj.geometry.describe(rng)
        style = rng.integers(3)
        words.append(f"{obj.colour} {name}" if style == 0 else name if style == 1 else f"{name} {obj.colour}")
    if rng.random() < 0.4 and len(order) > 1:
        words.append(f"{len(order)} shapes")
    for _ in range(int(rng.integers(0, 3))):
        filler = str(rng.choice(_FILLERS))
        words.insert(int(rng.integers(0, len(words) + 1)), filler)
    if rng.random() < 0.25:
        words.append(f"IMG_{int(rng.integers(1000, 10000))}")
    text = " ".join(words) if words else "photo"
    if rng.random() < 0.3:  # one typo: swap two neighbouring letters of a long word
        tokens = text.split(" ")
        long_ones = [k for k, t in enumerate(tokens) if len(t) >= 4 and t.isalpha()]
        if long_ones:
            k = long_ones[int(rng.integers(len(long_ones)))]
            j = int(rng.integers(0, len(tokens[k]) - 1))
            t = tokens[k]
            tokens[k] = t[:j] + t[j + 1] + t[j] + t[j + 2 :]
            text = " ".join(tokens)
    return text


def make_captions(
    scene: Scene, pose: np.ndarray, instance: np.ndarray | None, rng: np.random.Generator
) -> list[str]:
    """``[short, long]`` captions of one rendered view (only visible objects are mentioned)."""
    visible = None if instance is None else visible_objects(scene, instance)
    return [short_caption(scene, rng, visible), long_caption(scene, pose, visible, rng)]
