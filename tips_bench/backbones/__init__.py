"""The backbone registry: build any named backbone from its definition and files."""

from __future__ import annotations

from pathlib import Path

import torch

from tips_bench.backbones.base import Backbone, Features
from tips_bench.backbones.checkpoints import WEIGHTLESS_FAMILIES, CheckpointFiles
from tips_bench.backbones.families import family_loader, register_family
from tips_bench.backbones.spec import BackboneSpec, all_backbone_specs, get_backbone_spec

__all__ = ["Backbone", "BackboneSpec", "Features", "all_backbone_specs", "get_backbone_spec", "load_backbone",
           "register_family", "resolve_backbone_spec"]


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
    architecture with seeded random weights and reads no file. The definition's ``family`` picks the loader
    (see :mod:`tips_bench.backbones.families`).
    """
    spec = get_backbone_spec(name)
    files = None if random_init or spec.family in WEIGHTLESS_FAMILIES else CheckpointFiles(spec, checkpoint)
    loader = family_loader(spec)
    return loader.load(spec, files, str(device), num_heads=num_heads, text_num_heads=text_num_heads, arch=arch,
                       seed=seed)
