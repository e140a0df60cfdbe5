"""The backbone registry: build any named backbone from its definition and files."""

from __future__ import annotations

from pathlib import Path

import torch

from tips_bench.backbones.base import Backbone, Features
from tips_bench.backbones.checkpoints import WEIGHTLESS_FAMILIES, CheckpointFiles
from tips_bench.backbones.spec import BackboneSpec, all_backbone_specs, get_backbone_spec

__all__ = ["Backbone", "BackboneSpec", "Features", "all_backbone_specs", "get_backbone_spec", "load_backbone",
           "resolve_backbone_spec"]


def resolve_backbone_spec(spec: BackboneSpec, checkpoint: str | Path | None = None, arch: str | None = None,
                          random_init: bool = False) -> BackboneSpec:
    """The definition as its backbone will run: the generic ``openclip`` reads patch size and resolution from
    its file (or ``--arch``); every other definition is returned as it is."""
    if spec.family == "clip" and spec.architecture.get("from_file"):
        from tips_bench.backbones.clip import resolve_spec

        return resolve_spec(spec, checkpoint, arch, random_init)
    return spec


def load_backbone(
    name: str,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    device: str | torch.device = "cpu",
    num_heads: int | None = None,
    text_num_heads: int | None = None,
    arch: str | None = None,
    seed: int = 0,
) -> Backbone:
    """Build a named backbone from the user's checkpoint files, or with random weights.

    ``checkpoint`` is a file or a folder; without it the configured checkpoint folders are
    searched (see :mod:`tips_bench.backbones.checkpoints`). ``random_init`` builds the same
    architecture with seeded random weights and reads no file.
    """
    spec = get_backbone_spec(name)
    files = None if random_init or spec.family in WEIGHTLESS_FAMILIES else CheckpointFiles(spec, checkpoint)
    device = str(device)
    if spec.family == "tips":
        from tips_bench.backbones.tips import load_tips

        return load_tips(spec, files, device, num_heads=num_heads, text_num_heads=text_num_heads, seed=seed)
    if spec.family == "dinov2":
        from tips_bench.backbones.dinov2 import load_dinov2

        return load_dinov2(spec, files, device, seed=seed)
    if spec.family == "clip":
        from tips_bench.backbones.clip import load_clip

        return load_clip(spec, files, device, arch=arch, seed=seed)
    if spec.family == "siglip":
        from tips_bench.backbones.clip import load_siglip

        return load_siglip(spec, files, device, seed=seed)
    if spec.family == "oracle":
        from tips_bench.backbones.oracle import load_oracle

        return load_oracle(spec, device)
    if spec.family == "pixels":
        from tips_bench.backbones.pixels import PixelsBackbone

        return PixelsBackbone(spec, device)
    raise ValueError(f"unknown backbone family '{spec.family}' in {spec.path}")
