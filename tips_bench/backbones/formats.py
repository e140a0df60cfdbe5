"""Read the official checkpoint formats into plain state dicts, and say what a file looks like.

Formats: TIPS ``*_vision.npz`` / ``*_text.npz`` (a PyTorch state dict written with
``np.savez``), DINOv2 ``.pth`` (plain state dict), OpenAI CLIP ``.pt`` (TorchScript archive),
open_clip ``.bin`` / ``.safetensors``, timm / Hugging Face ``.safetensors``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from tips_bench.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


def read_state_dict(path: Path) -> StateDict:
    """Load any supported checkpoint file into a dict of CPU tensors."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return _read_torch_file(path)
    except CheckpointError:
        raise
    except Exception as exc:  # any failure to parse the file: foreign, truncated or damaged
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}: {reason}); "
                              "the file is corrupt or not a checkpoint, download it again") from exc


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives (OpenAI CLIP releases) are zip files with a ``constants.pkl`` record."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_torch_file(path: Path) -> StateDict:
    if is_torchscript_archive(path):  # take the scripted module's parameters
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors; pass the official weights file")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _count_blocks(sd: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def guess_family(sd: StateDict) -> str:
    """'tips_vision', 'tips_text', 'dinov2', 'clip', 'open_clip_timm', 'timm_vit' or 'unknown'."""
    if "token_embedding.weight" in sd and "ln_final.weight" in sd and "text_projection" not in sd:
        return "tips_text"
    if "register_tokens" in sd and "mask_token" in sd and sd["register_tokens"].shape[1] == 1:
        return "tips_vision"
    if "mask_token" in sd:
        return "dinov2"
    if "visual.class_embedding" in sd or "visual.conv1.weight" in sd:
        return "clip"
    if any(k.startswith("visual.trunk.") for k in sd):
        return "open_clip_timm"
    if "patch_embed.proj.weight" in sd:
        return "timm_vit"
    return "unknown"


def describe_state_dict(sd: StateDict) -> str:
    """A short description of what a checkpoint looks like, for error messages."""
    family = guess_family(sd)
    if family in ("tips_vision", "dinov2"):
        width, depth = sd["cls_token"].shape[-1], _count_blocks(sd, "blocks.")
        regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
        kind = "a TIPS vision tower" if family == "tips_vision" else f"a DINOv2 ViT with {regs} registers"
        return f"{kind} of width {width} with {depth} blocks"
    if family == "tips_text":
        width = sd["token_embedding.weight"].shape[1]
        return f"a TIPS text tower of width {width} with {_count_blocks(sd, 'transformer.resblocks.')} layers"
    if family == "clip":
        width = sd["visual.conv1.weight"].shape[0]
        depth = _count_blocks(sd, "visual.transformer.resblocks.")
        return f"a CLIP model with a vision width of {width} and {depth} blocks"
    if family == "open_clip_timm":
        return "an open_clip model with a timm vision trunk (e.g. SigLIP)"
    if family == "timm_vit":
        return f"a timm ViT of width {sd['patch_embed.proj.weight'].shape[0]}"
    return f"an unrecognised checkpoint with {len(sd)} tensors (first key '{next(iter(sd), '')}')"


def count_blocks(sd: StateDict, prefix: str) -> int:
    """Number of numbered blocks under ``prefix`` (e.g. ``blocks.``)."""
    return _count_blocks(sd, prefix)
