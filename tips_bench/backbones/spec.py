"""The typed form of a backbone definition (``backbones/<name>.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tips_bench.registry import get_definition, load_definitions

CAPABILITIES = ("image_global", "dense", "text")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the definition file says about a named backbone."""

    name: str
    family: str
    description: str
    paper: str
    architecture: dict[str, Any]
    native_resolution: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pos_embed_interpolation: str
    prefix_tokens: tuple[dict[str, str], ...]
    default_global: str
    capabilities: frozenset[str]
    dense_layers: tuple[int, ...] | str
    checkpoint_files: dict[str, str]
    checkpoint_urls: dict[str, str]
    dense_layer_norm: bool = True
    version: int = 1
    #: Folder (under the package's bundled checkpoints) holding shipped files, e.g. ``mini/mini_tips_full``.
    checkpoint_bundled: str = ""
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        ckpt = data.get("checkpoint", {}) or {}
        norm = data["normalization"]
        return cls(
            name=data["name"],
            family=data["family"],
            description=data.get("description", ""),
            paper=data.get("paper", ""),
            architecture=dict(data.get("architecture", {}) or {}),
            native_resolution=int(data["native_resolution"]),
            patch_size=int(data["patch_size"]),
            mean=tuple(norm["mean"]),
            std=tuple(norm["std"]),
            pos_embed_interpolation=data.get("pos_embed_interpolation", "timm_bicubic_antialias"),
            prefix_tokens=tuple(data.get("prefix_tokens", []) or []),
            default_global=data["default_global"],
            capabilities=frozenset(data.get("capabilities", [])),
            dense_layers=_dense_layers(data.get("dense_layers")),
            dense_layer_norm=bool(data.get("dense_layer_norm", True)),
            checkpoint_files=dict(ckpt.get("files", {}) or {}),
            checkpoint_urls=dict(ckpt.get("urls", {}) or {}),
            version=int(data.get("version", 1)),
            checkpoint_bundled=str(ckpt.get("bundled") or ""),
            path=data.get("_path", ""),
            raw=data,
        )

    def dense_blocks(self, num_layers: int) -> list[int]:
        """The four DPT layers: the definition's list, or probe3d's rule [L/4-1, L/2-1, 3L/4-1, L-1]."""
        if self.dense_layers == "probe3d":
            return sorted({num_layers // 4 - 1, num_layers // 2 - 1, num_layers // 4 * 3 - 1, num_layers - 1})
        chosen = [i for i in self.dense_layers if -num_layers <= i < num_layers]
        return chosen or [num_layers - 1]

    def can(self, capability: str) -> bool:
        """Whether the definition declares a capability (``image_global``, ``dense``, ``text``)."""
        return capability in self.capabilities


def _dense_layers(value: Any) -> tuple[int, ...] | str:
    if value == "probe3d":
        return "probe3d"
    return tuple(int(v) for v in (value or []))


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec of a named backbone (error with suggestions if unknown)."""
    return BackboneSpec.from_dict(get_definition("backbones", name))


def all_backbone_specs() -> list[BackboneSpec]:
    """Every registered backbone, sorted by name."""
    return [BackboneSpec.from_dict(d) for _, d in sorted(load_definitions("backbones").items())]
