"""The feature contract every backbone implements.

A backbone takes RGB pixels in [0, 1] of shape (B, 3, H, W), H and W multiples of its patch
size, applies its own pixel normalisation, and returns :class:`Features`:

* ``globals``: named global embeddings (B, D): TIPS ``cls1``/``cls2``, CLIP and SigLIP
  ``embedding`` (projected, in text space), DINOv2 ``cls``, pixels ``mean``.
* ``patches``: patch feature maps (B, D, h, w) per requested block index (0-based), after the
  backbone's final norm (``get_intermediate_layers(norm=True)``, DINOv2 segmentation, TIPS) or the
  raw block output with ``norm=False`` (DINOv2's depther, probe3d).
* ``layer_cls``: the first prefix (CLS) token of each requested block (B, D), normed like the
  patches: the "own CLS" that DINOv2 lin.4, probe3d and the TIPS DPT heads concatenate.
* ``text_dense``: (B, D_text, h, w) patch features in the text embedding space, for
  zero-shot segmentation (TIPS: the values trick; CLIP: patch tokens through the projection),
  only when asked for.

Text-capable backbones also implement ``encode_text(texts) -> (B, D_text)`` (not normalised)
and expose ``logit_scale``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tips_bench.backbones.spec import BackboneSpec
from tips_bench.errors import CapabilityError, InputError


@dataclass
class Features:
    """What ``encode_image`` returns."""

    globals: dict[str, torch.Tensor]
    patches: dict[int, torch.Tensor] = field(default_factory=dict)
    text_dense: torch.Tensor | None = None
    layer_cls: dict[int, torch.Tensor] = field(default_factory=dict)


class Backbone(ABC):
    """A frozen image (and optionally text) encoder built from a definition and its files."""

    spec: BackboneSpec
    embed_dim: int
    num_layers: int
    text_dim: int = 0
    checkpoint_hash: str = ""
    #: Backbones that read the ground truth of the views they encode (the ``oracle`` self-test backbone).
    sees_targets: bool = False

    def __init__(self, spec: BackboneSpec, device: str | torch.device = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def global_names(self) -> tuple[str, ...]:
        """Names of the global embeddings ``encode_image`` returns."""
        return (self.spec.default_global,)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Apply the backbone's pixel normalisation to [0, 1] RGB."""
        mean, std = self._mean.to(pixels.device, pixels.dtype), self._std.to(pixels.device, pixels.dtype)
        return (pixels - mean) / std

    def check_size(self, height: int, width: int) -> None:
        """Raise one clear sentence if the size does not fit the patch grid."""
        p = self.patch_size
        if height % p or width % p or height <= 0 or width <= 0:
            raise InputError(
                f"image size {height}x{width} is not a multiple of {self.name}'s patch size {p}; "
                f"use e.g. {max(p, height // p * p)}x{max(p, width // p * p)}"
            )

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Turn block indices (negatives count from the end; None = last) into sorted positives."""
        if layers is None:
            return [self.num_layers - 1]
        out = []
        for layer in layers:
            idx = layer + self.num_layers if layer < 0 else layer
            if not 0 <= idx < self.num_layers:
                raise InputError(f"layer {layer} does not exist in {self.name}, which has {self.num_layers} blocks")
            out.append(idx)
        return sorted(set(out))

    @torch.inference_mode()
    def encode_image(
        self,
        pixels: torch.Tensor,
        layers: Sequence[int] | None = None,
        text_dense: bool = False,
        norm: bool = True,
        targets: dict[str, torch.Tensor] | None = None,
    ) -> Features:
        """Encode [0, 1] RGB pixels (B, 3, H, W); see the module docstring for the outputs.

        ``targets`` (view-aligned ground truth) is read only by backbones with ``sees_targets``.
        """
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"expected images of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        self.check_size(pixels.shape[-2], pixels.shape[-1])
        if text_dense and not self.spec.can("text"):
            raise CapabilityError(f"{self.name} has no text tower, so it has no text-aligned dense features")
        x = self.normalize(pixels.to(self.device, torch.float32))  # autocast (if any) lowers the matmuls
        if self.sees_targets:
            return self._encode(x, self.resolve_layers(layers), text_dense, norm=norm, targets=targets or {})
        return self._encode(x, self.resolve_layers(layers), text_dense, norm=norm)

    @abstractmethod
    def _encode(self, x: torch.Tensor, layers: list[int], text_dense: bool, norm: bool = True, **kw) -> Features:
        """Encode normalised pixels."""

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings (B, D_text), not normalised."""
        if not self.spec.can("text"):
            raise CapabilityError(
                f"{self.name} is an image-only backbone and cannot encode text; "
                "pick a backbone with a text tower (tips_*, tipsv2_*, clip_*, siglip_*) for this task"
            )
        return self._encode_text(list(texts))

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        raise CapabilityError(f"{self.name} cannot encode text")

    @property
    def logit_scale(self) -> float:
        """Multiplier of cosine similarities in image-text logits (1 / temperature)."""
        raise CapabilityError(f"{self.name} has no text tower and no logit scale")

    def describe(self) -> dict[str, object]:
        """Facts recorded with every result."""
        return {
            "backbone": self.name,
            "family": self.spec.family,
            "embed_dim": self.embed_dim,
            "num_layers": self.num_layers,
            "patch_size": self.patch_size,
            "checkpoint_hash": self.checkpoint_hash,
        }
