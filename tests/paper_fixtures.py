"""The TIPS / TIPSv2 paper tasks' official-format fixtures, the test-only ``tiny_tips`` backbone and smoke overrides.

Shared by the paper-task tests and the oracle self-test. Every real dataset is written by its fixture writer
(tests/fixture_writers); ``tiny_tips`` is a random TIPS-architecture model (width 32, 2 blocks, random 12-layer text
tower) registered through ``$TIPS_BENCH_PATH`` for the module that uses these fixtures.
"""

from __future__ import annotations

from pathlib import Path

from tips_bench.tasks.base import get_task_definition

REPO = Path(__file__).resolve().parents[1]

TINY_TIPS = """\
name: tiny_tips
family: tips
version: 1
description: test-only TIPS-architecture model (width 32, 2 blocks); random weights only (+random)
paper: '-'
architecture: {embed_dim: 32, depth: 2, num_heads: 1, ffn: mlp, text_num_heads: 1, read_from_checkpoint: true}
native_resolution: 56
patch_size: 14
normalization: {mean: [0.0, 0.0, 0.0], std: [1.0, 1.0, 1.0]}
pos_embed_interpolation: bilinear_antialias
prefix_tokens:
- {name: cls1, description: first CLS token}
- {name: cls2, description: second CLS token}
default_global: cls1
capabilities: [image_global, dense, text]
dense_layers: [0, 1]
checkpoint:
  files: {vision: tiny_tips_vision.npz, text: tiny_tips_text.npz, tokenizer: tiny_tips.model}
  urls: {vision: '', text: '', tokenizer: ''}
"""

PIXELS, TEXT = "pixels", "tiny_tips+random"
DPT = {"head.hidden": 16}  # the probe3d DPT is 512 wide; 16 keeps the CPU test fast


def smoke(task: str) -> dict:
    """Overrides that shrink a task to a 56 px input and one probe epoch, whatever its frame."""
    d = get_task_definition(task)
    frame, out = d.spec.frame, {}
    if frame.resize == "square":
        out["resolution"] = 56
    elif frame.resize == "center_crop":
        out |= {"frame.short_side": 56, "frame.crop": 56}
    elif frame.resize == "keep_aspect":
        out["frame.short_side"] = 56
    if frame.inference == "slide":
        out |= {"frame.window": 56, "frame.stride": 42}
    if "probe" in d.protocol:
        out["probe.epochs"] = 1
    return out

# task -> (fixture root, backbone, extra overrides, metrics expected with --limit 2 (None = all of the task's))
CASES: dict[str, tuple[str, str, dict, set[str] | None]] = {
    "voc_seg": ("voc", PIXELS, {}, None),
    "ade20k_seg": ("ade20k", PIXELS, {}, None),
    "nyu_depth": ("nyu_depth", PIXELS, {}, None),
    "nyu_normals": ("nyu_normals", PIXELS, DPT, None),
    "navi_depth": ("navi", PIXELS, DPT, None),
    "navi_normals": ("navi", PIXELS, DPT, None),
    "uned_retrieval": ("uned", PIXELS, {}, {"R@1", "R@1_pooled", "R@1_cars"}),  # the first 2 queries are cars
    "imagenet_knn": ("imagenet", PIXELS, {}, None),
    "imagenet_linear": ("imagenet", PIXELS, {}, None),
    "imagenet_knn_dinov2": ("imagenet", PIXELS, {}, None),
    "imagenet_linear_dinov2": ("imagenet", PIXELS, {}, None),
    "imagenet_zeroshot": ("imagenet", TEXT, {"templates": "simple"}, None),  # 1 prompt per class, not CLIP's 80
    "coco_retrieval": ("coco", TEXT, {}, None),
    "flickr_retrieval": ("flickr", TEXT, {}, None),
    "docci_retrieval": ("docci", TEXT, {}, None),
    "ade150_zeroseg": ("ade20k", TEXT, {"templates": "simple"}, None),  # 150 classes x 9 TCL prompts is slow on CPU
    "pc59_zeroseg": ("pascal_context", TEXT, {}, None),
    "pc60_zeroseg": ("pascal_context", TEXT, {}, None),
    "voc21_zeroseg": ("voc", TEXT, {}, None),
    "spair_corr": ("spair", PIXELS, {}, None),
    "navi_corr": ("navi", PIXELS, {}, None),
}
