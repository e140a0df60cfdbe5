"""A few fixed examples per (run, backbone, dense task), saved beside the results store for the HTML report.

Layout: ``<results>.artifacts/<run_id>/<backbone>__<task>.npz`` (``<results>`` is the store file,
e.g. ``results/runs.jsonl``). Each example holds

- ``image``: uint8 (H, W, 3), the input as the backbone saw it;
- ``target`` and ``prediction``: segmentation labels int (H, W), depth float (H, W) or normals
  float (H, W, 3), in the same frame;
- ``kind``: "segmentation", "depth" or "normals";
- ``patch_features``: float (D, h, w), the patch features the probe read (stored as float16), from
  which the report draws a 3-component PCA map.

Dense tasks call `save_examples` after scoring; the report calls `load_examples` and omits the
panel, with a note, when nothing was saved.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tips_bench.atomic import atomic_path

KINDS = ("segmentation", "depth", "normals")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Example:
    """One input with its ground truth, the probe's prediction and the patch features."""

    image: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    kind: str
    patch_features: np.ndarray

    @classmethod
    def coerce(cls, item: Example | Mapping) -> Example:
        """An Example from itself or a mapping with the same keys; ValueError on wrong shapes or kinds."""
        data = item if isinstance(item, Mapping) else item.__dict__
        missing = [k for k in ("image", "target", "prediction", "kind", "patch_features") if k not in data]
        if missing:
            raise ValueError(f"an example needs {', '.join(missing)}")
        example = cls(np.asarray(data["image"]), np.asarray(data["target"]), np.asarray(data["prediction"]),
                      str(data["kind"]), np.asarray(data["patch_features"]))
        example.check()
        return example

    def check(self) -> None:
        """Raise ValueError unless the arrays fit ``kind``."""
        if self.kind not in KINDS:
            raise ValueError(f"example kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"example image must be uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}")
        want = (*self.image.shape[:2], 3) if self.kind == "normals" else self.image.shape[:2]
        for name in ("target", "prediction"):
            got = getattr(self, name)
            if got.shape != want:
                raise ValueError(f"example {name} of a {self.kind} example must have shape {want}, got {got.shape}")
        if self.kind == "segmentation" and not all(np.issubdtype(a.dtype, np.integer)
                                                   for a in (self.target, self.prediction)):
            raise ValueError("segmentation target and prediction must be integer label maps")
        if self.patch_features.ndim != 3:
            raise ValueError(f"example patch_features must be (D, h, w), got {self.patch_features.shape}")


def artifacts_root(results_path: str | Path) -> Path:
    """``<results>.artifacts`` beside the results store."""
    return Path(f"{results_path}.artifacts")


def artifact_path(results_path: str | Path, run_id: str, backbone: str, task: str) -> Path:
    """Where the examples of one (run, backbone, task) live."""
    return artifacts_root(results_path) / _safe(run_id) / f"{_safe(backbone)}__{_safe(task)}.npz"


def save_examples(results_path: str | Path, run_id: str, backbone: str, task: str,
                  examples: Sequence[Example | Mapping]) -> Path:
    """Write the examples atomically (npz; features as float16) and return the file's path."""
    items = [Example.coerce(e) for e in examples]
    if not items:
        raise ValueError("save_examples needs at least one example")
    arrays: dict[str, np.ndarray] = {}
    for i, ex in enumerate(items):
        arrays[f"image_{i}"] = ex.image
        arrays[f"target_{i}"] = ex.target.astype(np.int32) if ex.kind == "segmentation" else ex.target.astype(
            np.float32)
        arrays[f"prediction_{i}"] = ex.prediction.astype(np.int32) if ex.kind == "segmentation" else \
            ex.prediction.astype(np.float32)
        arrays[f"features_{i}"] = ex.patch_features.astype(np.float16)
    meta = {"format": FORMAT_VERSION, "run_id": run_id, "backbone": backbone, "task": task,
            "kinds": [ex.kind for ex in items]}
    arrays["meta"] = np.array(json.dumps(meta))
    path = artifact_path(results_path, run_id, backbone, task)
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_examples(path: str | Path) -> list[Example]:
    """The examples of one file; ValueError when it is unreadable or not an artifacts file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return [Example.coerce({"image": data[f"image_{i}"], "target": data[f"target_{i}"],
                                    "prediction": data[f"prediction_{i}"], "kind": kind,
                                    "patch_features": data[f"features_{i}"].astype(np.float32)})
                    for i, kind in enumerate(meta["kinds"])]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if isinstance(exc, ValueError) and "pickle" in reason:
            reason = "not an npz archive"
        raise ValueError(f"{Path(path).name} is not a readable examples file ({reason})") from None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip(".") or "_"
