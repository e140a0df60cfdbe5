"""Write trained towers in the official TIPS file layout, byte-reproducibly.

``<prefix>_vision.npz`` holds the keys of the official ``*_vision.npz`` in its order
(``cls_token``, ``pos_embed`` (1, 1 + G*G, D) with a class position, ``register_tokens``,
``mask_token``, ``patch_embed.*``, ``blocks.N.*``, ``norm.*``); ``<prefix>_text.npz`` the keys of
``*_text.npz`` plus the scalar ``temperature``; ``tokenizer.model`` the SentencePiece model.

:func:`prepare_out` and :func:`publish` make the output folder appear whole or not at all.

``np.savez`` stamps each member with the current time, so two identical models would give
different bytes; :func:`write_npz` writes the same zip layout (stored ``<key>.npy`` members, which
``np.load`` reads) with fixed timestamps instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tips_bench.errors import TipsBenchError
from tips_bench.pretrain.models import ImageTower

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` whose bytes depend only on the arrays (names, order, dtypes, values)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.require(array, requirements='C'), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def vision_arrays(tower: ImageTower) -> dict[str, np.ndarray]:
    """The official ``*_vision.npz`` arrays of an image tower.

    timm folds the class position into ``cls_token`` and keeps only patch positions; the official
    layout has a class position, written here as zeros so that loading (``cls_token +
    pos_embed[:, 0]``) gives back exactly the trained token.
    """
    sd = tower.vit.state_dict()
    width = sd["cls_token"].shape[-1]
    out = {
        "cls_token": _numpy(sd["cls_token"]),
        "pos_embed": _numpy(torch.cat([torch.zeros(1, 1, width), sd["pos_embed"].cpu()], dim=1)),
        "register_tokens": _numpy(sd["reg_token"]),
        "mask_token": _numpy(tower.mask_token),
    }
    for key, value in sd.items():
        if key not in ("cls_token", "pos_embed", "reg_token"):
            out[key] = _numpy(value)
    return out


def text_arrays(text: torch.nn.Module, temperature: float) -> dict[str, np.ndarray]:
    """The official ``*_text.npz`` arrays: the tower's state dict and the scalar ``temperature``."""
    out = {key: _numpy(value) for key, value in text.state_dict().items()}
    out["temperature"] = np.asarray(temperature, dtype=np.float32)
    return out


def sha256(path: Path) -> str:
    """Full sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_record(path: Path, record: dict[str, Any]) -> None:
    """``recipe.json``: pretty-printed, keys in insertion order, newline-terminated."""
    path.write_text(json.dumps(record, indent=2) + "\n")


def compare_folders(a: Path, b: Path) -> dict[str, dict[str, Any]]:
    """Per file of folder ``a`` (except ``recipe.json``): identical bytes, and for ``.npz`` files the
    largest absolute difference of any array (``inf`` when keys or shapes differ)."""
    report: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(a).iterdir()):
        if path.name == "recipe.json":
            continue
        other = Path(b) / path.name
        entry: dict[str, Any] = {"identical": other.is_file() and path.read_bytes() == other.read_bytes()}
        if path.suffix == ".npz" and other.is_file():
            with np.load(path) as x, np.load(other) as y:
                if x.files != y.files or any(x[k].shape != y[k].shape for k in x.files):
                    entry["max_abs_diff"] = float("inf")
                else:
                    entry["max_abs_diff"] = max(float(np.abs(x[k].astype(np.float64) - y[k]).max(initial=0.0))
                                                for k in x.files)
        report[path.name] = entry
    return report


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a folder with files in it unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise TipsBenchError(f"--out {out} is a file; pass a folder (it is created if missing)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TipsBenchError(f"--out {out} already holds files; pass a new or empty folder, or add --overwrite")


def publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (replacing an old one only now, when all files exist)."""
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)
