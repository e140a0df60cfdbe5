"""The built-in synthetic world: seeded scenes of simple 3D shapes with exact ground truth.

Every image is rendered by analytic ray casting in numpy (one vectorised pass over all pixels), so
class labels, depth, normals, camera parameters, correspondences and captions all come from the
scene geometry itself, never from a model.

Conventions
-----------
* Units are metres. The **world** frame is right-handed with ``+y`` up; the ground is the disc
  ``y = 0, x**2 + z**2 <= GROUND_RADIUS**2``. Objects rest on it; beyond it lies the sky.
* The **camera** frame is OpenCV's: ``x`` right, ``y`` down, ``z`` forward (optical axis).
  ``pose`` is the 4x4 camera-to-world transform (``X_world = R @ X_cam + t``), ``intrinsics`` the
  pinhole matrix ``K``. Pixel ``(row i, column j)`` has its centre at image coordinates
  ``(x, y) = (j, i)``; correspondences are given in these ``(x, y)`` coordinates.
* ``depth`` is the z-depth in the camera frame (distance along the optical axis, not along the
  ray), in metres; sky pixels have depth 0 and ``depth_valid`` False. All hits lie in
  ``DEPTH_RANGE``.
* ``normals`` are unit vectors in the camera frame, oriented towards the camera
  (``dot(n, ray) < 0``); sky pixels are zero with ``normals_valid`` False.
* ``seg`` class ids index ``SEG_CLASSES``: 0 sky, 1 ground, 2 sphere, 3 cube, 4 cylinder, 5 cone.
  Object-level labels index ``OBJECT_CLASSES`` (sphere, cube, cylinder, cone).
* Images are uint8 RGB: Lambertian shading with one directional light plus ambient, hard shadows
  cast by the objects, procedural textures in each object's own frame (so they move with it), a
  textured ground and a gradient sky, plus a little seeded Gaussian pixel noise.
* ``captions = [short, long]``: a noisy alt-text style caption and an exact spatial description
  derived from camera-frame object positions, mirroring web versus synthetic captions.

Every sample is a pure function of ``(seed, dataset kind, split, index)``: its generator is seeded
with ``numpy.random.SeedSequence([seed, kind, crc32(split), index])``, so splits never share scenes.

Layout: :mod:`.shapes` (one class per shape: intersection, normals, loose names), :mod:`.scene`
(constants, objects, random scenes), :mod:`.cameras`, :mod:`.renderer` (ray casting, view matching),
:mod:`.captions` and :mod:`.datasets`; every public name is re-exported here.
"""

from tips_bench.data.synthetic.cameras import look_at, make_intrinsics, orbit_pose, scene_camera
from tips_bench.data.synthetic.captions import (
    long_caption,
    make_captions,
    short_caption,
    spatial_relation,
    visible_objects,
)
from tips_bench.data.synthetic.datasets import ObjectDataset, PairDataset, SceneDataset
from tips_bench.data.synthetic.renderer import match_views, object_bbox, render_view
from tips_bench.data.synthetic.scene import (
    AMBIENT,
    DEPTH_AGREE_ABS,
    DEPTH_AGREE_REL,
    DEPTH_RANGE,
    GROUND_COLOURS,
    GROUND_RADIUS,
    GROUND_TEXTURES,
    NOISE_STD,
    OBJECT_CLASSES,
    PALETTE,
    SEG_CLASSES,
    SKIES,
    TEXTURES,
    Scene,
    SceneObject,
    make_object,
    make_scene,
)
from tips_bench.data.synthetic.shapes import SHAPES, Shape, get_shape, register_shape

__all__ = [
    "AMBIENT",
    "DEPTH_AGREE_ABS",
    "DEPTH_AGREE_REL",
    "DEPTH_RANGE",
    "GROUND_COLOURS",
    "GROUND_RADIUS",
    "GROUND_TEXTURES",
    "NOISE_STD",
    "OBJECT_CLASSES",
    "PALETTE",
    "SEG_CLASSES",
    "SHAPES",
    "SKIES",
    "TEXTURES",
    "ObjectDataset",
    "PairDataset",
    "Scene",
    "SceneDataset",
    "SceneObject",
    "Shape",
    "get_shape",
    "long_caption",
    "look_at",
    "make_captions",
    "make_intrinsics",
    "make_object",
    "make_scene",
    "match_views",
    "object_bbox",
    "orbit_pose",
    "register_shape",
    "render_view",
    "scene_camera",
    "short_caption",
    "spatial_relation",
    "visible_objects",
]
