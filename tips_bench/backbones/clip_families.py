"""Registers the open_clip families, ``clip`` (OpenAI CLIP, OpenCLIP) and ``siglip``.

Their loaders live in :mod:`tips_bench.backbones.clip`; registering them here keeps that module
free of the registry (imported only when a CLIP or SigLIP backbone is built).
"""

from __future__ import annotations

from tips_bench.backbones.clip import load_clip, load_siglip
from tips_bench.backbones.families import register_family

register_family("clip")(load_clip)
register_family("siglip")(load_siglip)
