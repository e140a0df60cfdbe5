"""Light dense-prediction heads trained on frozen patch features.

Every head takes ``maps`` (a list of 1..4 patch-feature maps ``(B, D_i, h, w)``, same ``h, w``), an optional
global token ``cls`` ``(B, D_cls)`` and an optional ``out_size=(H, W)``, and returns ``(B, C, H, W)`` (or the
head's native resolution when ``out_size`` is None).

* :class:`LinearHead`: the DINOv2 linear protocol (Oquab et al. 2024, §7.4 and the ``BNHead`` of its mmseg
  configs), which TIPS says it follows for segmentation and NYUv2 depth.
* :class:`DPTHead`: a DPT decoder (Ranftl et al., ICCV 2021) in the layout of the TIPSv2 release heads
  (``pytorch/decoders.py``: "project" readout, 4 reassemble scales, pre-activation fusion blocks); probe3d
  (El Banani et al., CVPR 2024) trains a DPT head for NAVI depth and for normals.
* :func:`bins_to_depth` / :class:`BinsDepthHead`: depth as the expectation over 256 uniform bins with
  AdaBins' "linear" normalisation (Bhat et al., CVPR 2021), as DINOv2, probe3d and the TIPSv2 release do.
* :func:`to_normals`: unit normals plus the κ of Bae et al. (ICCV 2021) as used by probe3d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tips_bench.probes.vectors import unit

__all__ = [
    "BinsDepthHead",
    "DPTHead",
    "FusionBlock",
    "LinearHead",
    "OutputHead",
    "Readout",
    "Reassemble",
    "ResidualConvUnit",
    "bin_centers",
    "bins_to_depth",
    "to_normals",
]

Size = tuple[int, int]


def _resize(x: torch.Tensor, size: Size | None, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize to ``size`` (no-op when None or already that size)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _check_maps(maps: Sequence[torch.Tensor], in_dims: Sequence[int], max_layers: int | None = None) -> None:
    if not maps:
        raise ValueError("maps must hold at least one feature map")
    if max_layers is not None and len(maps) > max_layers:
        raise ValueError(f"at most {max_layers} feature maps, got {len(maps)}")
    if len(maps) != len(in_dims):
        raise ValueError(f"got {len(maps)} feature maps but the head was built for {len(in_dims)} ({list(in_dims)})")
    hw = maps[0].shape[-2:]
    for i, (m, d) in enumerate(zip(maps, in_dims, strict=True)):
        if m.ndim != 4 or m.shape[1] != d or m.shape[-2:] != hw:
            raise ValueError(f"map {i} has shape {tuple(m.shape)}; expected (B, {d}, {hw[0]}, {hw[1]})")


def _broadcast_cls(cls: torch.Tensor | None, like: torch.Tensor, cls_dim: int) -> torch.Tensor:
    """The global token as a constant map ``(B, D_cls, h, w)`` shaped like ``like``."""
    if cls is None:
        raise ValueError("this head was built with use_cls=True but no cls token was given")
    if cls.ndim != 2 or cls.shape[0] != like.shape[0] or cls.shape[1] != cls_dim:
        raise ValueError(f"cls has shape {tuple(cls.shape)}; expected ({like.shape[0]}, {cls_dim})")
    return cls[:, :, None, None].expand(-1, -1, *like.shape[-2:])


def _per_map_cls(cls: torch.Tensor | Sequence[torch.Tensor] | None, maps: Sequence[torch.Tensor]
                 ) -> list[torch.Tensor]:
    """One CLS token per map (heads built with ``own_cls``)."""
    if cls is None or isinstance(cls, torch.Tensor) or len(cls) != len(maps):
        raise ValueError(f"this head takes one CLS token per feature map ({len(maps)}), got "
                         f"{'none' if cls is None else type(cls).__name__}")
    return list(cls)


# ----------------------------------------------------------------------------------------------------------
# Linear protocol (DINOv2)
# ----------------------------------------------------------------------------------------------------------


class LinearHead(nn.Module):
    """DINOv2 linear probe: concat layers (+ broadcast CLS), ×``upsample`` bilinear, BatchNorm2d, 1×1 conv.

    DINOv2 seg "lin." = last layer, no CLS, ``upsample=1``; DINOv2 depth "lin. 1" = last layer + CLS,
    ``upsample=4``, 256 outputs (use with :class:`BinsDepthHead`); "+ms"/"lin. 4" variants pass 4 layers.
    Logits are bilinearly resized (``align_corners=False``) to ``out_size``.

    In eval mode the classifier runs *before* the ×``upsample`` interpolation: BatchNorm with running
    statistics and a 1×1 conv are per-pixel affine maps and bilinear weights sum to one, so the two orders
    agree up to rounding while the classifier touches ``upsample²`` times fewer pixels. Training keeps
    DINOv2's order, since batch statistics are taken over the upsampled map.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_channels: int,
        use_cls: bool = False,
        upsample: int = 1,
        cls_dim: int | None = None,
        own_cls: bool = False,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("in_dims must name at least one layer")
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        self.in_dims = [int(d) for d in in_dims]
        self.use_cls = use_cls
        self.own_cls = bool(use_cls and own_cls)
        self.upsample = int(upsample)
        if self.own_cls:  # each layer's own CLS next to its patch tokens (DINOv2 BNHead with return_class_token)
            self.cls_dim = 0
            channels = 2 * sum(self.in_dims)
        else:
            self.cls_dim = int(cls_dim if cls_dim is not None else self.in_dims[-1]) if use_cls else 0
            channels = sum(self.in_dims) + self.cls_dim
        self.bn = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.classifier = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(
        self, maps: Sequence[torch.Tensor], cls: torch.Tensor | Sequence[torch.Tensor] | None = None,
        out_size: Size | None = None,
    ) -> torch.Tensor:
        """``cls``: the global token (B, D_cls), or with ``own_cls`` one token per map (B, D_i)."""
        _check_maps(maps, self.in_dims)
        if self.own_cls:
            tokens = _per_map_cls(cls, maps)
            x = torch.cat([t for m, c in zip(maps, tokens, strict=True) for t in (m, _broadcast_cls(c, m, m.shape[1]))],
                          dim=1)
        else:
            x = torch.cat(list(maps), dim=1)
        if self.use_cls and not self.own_cls:
            x = torch.cat([x, _broadcast_cls(cls, x, self.cls_dim)], dim=1)
        h, w = x.shape[-2:]
        up = (h * self.upsample, w * self.upsample)
        if self.upsample == 1:
            logits = self.classifier(self.bn(x))
        elif self.training:
            logits = self.classifier(self.bn(_resize(x, up)))
        else:
            logits = _resize(self.classifier(self.bn(x)), up)
        return _resize(logits, out_size)


# ----------------------------------------------------------------------------------------------------------
# DPT (Ranftl et al. 2021), layout of the TIPSv2 release heads
# ----------------------------------------------------------------------------------------------------------


class Readout(nn.Module):
    """DPT "project" readout: concat the global token to every patch token, then Linear(D + D_cls → D) + GELU."""

    def __init__(self, dim: int, cls_dim: int) -> None:
        super().__init__()
        self.cls_dim = cls_dim
        self.proj = nn.Linear(dim + cls_dim, dim)

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        y = torch.cat([x, _broadcast_cls(cls, x, self.cls_dim)], dim=1)
        return F.gelu(self.proj(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class Reassemble(nn.Module):
    """One DPT reassemble stage: optional readout, 1×1 conv to ``channels``, resample by ``scale``.

    ``scale`` 4 and 2 use transposed convs (kernel = stride = scale), 1 is the identity and 0.5 a 3×3 stride-2
    conv, giving maps at 4h, 2h, h and ⌈h/2⌉ for the four layers (DPT's 1/4 … 1/32 of a patch-16 image).
    """

    def __init__(self, dim: int, channels: int, scale: float, cls_dim: int = 0) -> None:
        super().__init__()
        self.readout = Readout(dim, cls_dim) if cls_dim else None
        self.project = nn.Conv2d(dim, channels, kernel_size=1)
        if scale in (4, 2):
            self.resample: nn.Module = nn.ConvTranspose2d(channels, channels, kernel_size=int(scale), stride=int(scale))
        elif scale == 1:
            self.resample = nn.Identity()
        elif scale == 0.5:
            self.resample = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(f"scale must be one of 4, 2, 1, 0.5; got {scale}")

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        if self.readout is not None:
            x = self.readout(x, cls)
        return self.resample(self.project(x))


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit of DPT's refinenet: x + conv3×3(relu(conv3×3(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT fusion: ``x (+ RCU(skip))`` → RCU → bilinear upsample (``align_corners=True``) → 1×1 conv.

    The upsample goes to ``size`` (the next, finer skip's size, so odd token grids work) or ×2 when None.
    """

    def __init__(self, channels: int, with_skip: bool = True) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels) if with_skip else None
        self.unit = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Size | None = None) -> torch.Tensor:
        if skip is not None:
            if self.skip_unit is None:
                raise ValueError("this fusion block was built without a skip input")
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        size = tuple(size) if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(_resize(x, size, align_corners=True))


class OutputHead(nn.Module):
    """DPT output head: conv3×3 (C → C/2) → bilinear upsample → conv3×3 (→ 32) → ReLU → conv1×1 (→ out).

    DPT upsamples ×2, which lands on the input resolution for patch-16 backbones; here the upsample goes
    straight to ``out_size`` when given (same thing for patch 16, no second resize for patch 14) and ×2
    otherwise. No final activation: the output is logits (bins, classes) or raw normals.
    """

    def __init__(self, channels: int, out_channels: int, mid_channels: int = 32) -> None:
        super().__init__()
        half = max(channels // 2, 1)
        self.conv1 = nn.Conv2d(channels, half, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(half, mid_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, out_size: Size | None = None) -> torch.Tensor:
        x = self.conv1(x)
        size = tuple(out_size) if out_size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        x = _resize(x, size, align_corners=True)
        return self.conv3(F.relu(self.conv2(x)))


class DPTHead(nn.Module):
    """DPT decoder on 1..4 ViT layers (the last one is repeated when fewer than 4 are given).

    Reassemble (readout "project" when ``use_cls``; 1×1 conv to ``post_channels``, default
    ``(hidden/2, hidden, 2·hidden, 4·hidden)`` = the TIPSv2 release's (128, 256, 512, 1024) at hidden 256;
    resample ×4, ×2, ×1, ×½), a 3×3 conv of each scale to ``hidden``, four fusion blocks from the coarsest
    scale up, then :class:`OutputHead`. The result is at ``out_size``, or 16× the token grid when None.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_channels: int,
        hidden: int = 256,
        use_cls: bool = True,
        cls_dim: int | None = None,
        post_channels: Sequence[int] | None = None,
        own_cls: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= len(in_dims) <= 4:
            raise ValueError(f"DPTHead takes 1 to 4 layers, got {len(in_dims)}")
        self.in_dims = [int(d) for d in in_dims]
        self.use_cls = use_cls
        self.own_cls = bool(use_cls and own_cls)
        self.cls_dim = int(cls_dim if cls_dim is not None else self.in_dims[-1]) if use_cls else 0
        dims = self.in_dims + [self.in_dims[-1]] * (4 - len(self.in_dims))
        cls_dims = dims if self.own_cls else [self.cls_dim] * 4
        default_post = [max(hidden // 2, 1), hidden, 2 * hidden, 4 * hidden]
        post = list(post_channels) if post_channels is not None else default_post
        if len(post) != 4:
            raise ValueError(f"post_channels must have 4 entries, got {post}")
        self.reassemble = nn.ModuleList(
            Reassemble(d, c, s, k) for d, c, s, k in zip(dims, post, (4, 2, 1, 0.5), cls_dims, strict=True)
        )
        self.layer_convs = nn.ModuleList(nn.Conv2d(c, hidden, kernel_size=3, padding=1, bias=False) for c in post)
        self.fusion = nn.ModuleList(FusionBlock(hidden, with_skip=i > 0) for i in range(4))
        self.head = OutputHead(hidden, out_channels)

    def forward(
        self, maps: Sequence[torch.Tensor], cls: torch.Tensor | Sequence[torch.Tensor] | None = None,
        out_size: Size | None = None,
    ) -> torch.Tensor:
        """``cls``: the global token (B, D_cls), or with ``own_cls`` one token per map (B, D_i)."""
        _check_maps(maps, self.in_dims, max_layers=4)
        tokens = _per_map_cls(cls, maps) if self.own_cls else [cls] * len(maps)
        maps = list(maps) + [maps[-1]] * (4 - len(maps))
        tokens = tokens + [tokens[-1]] * (4 - len(tokens))
        feats = [conv(re(m, c)) for m, c, re, conv in zip(maps, tokens, self.reassemble, self.layer_convs,
                                                          strict=True)]
        x = self.fusion[0](feats[3], size=feats[2].shape[-2:])
        x = self.fusion[1](x, feats[2], size=feats[1].shape[-2:])
        x = self.fusion[2](x, feats[1], size=feats[0].shape[-2:])
        x = self.fusion[3](x, feats[0])
        return self.head(x, out_size)


# ----------------------------------------------------------------------------------------------------------
# Output parameterisations
# ----------------------------------------------------------------------------------------------------------


def bin_centers(
    min_depth: float, max_depth: float, n_bins: int = 256, device: torch.device | None = None
) -> torch.Tensor:
    """Uniform ("UD") depth-bin centres ``linspace(min_depth, max_depth, n_bins)``, both ends included.

    As DINOv2's ``DepthBaseDecodeHead`` (bins_strategy "UD"), probe3d's ``DepthBinPrediction`` and the
    TIPSv2 ``DepthDecoder``: the endpoints themselves are centres, so spacing is (max − min)/(n_bins − 1).
    """
    return torch.linspace(min_depth, max_depth, n_bins, device=device, dtype=torch.float32)


def bins_to_depth(
    logits: torch.Tensor,
    min_depth: float,
    max_depth: float,
    n_bins: int = 256,
    norm: str = "linear",
    eps: float = 0.1,
) -> torch.Tensor:
    """Metric depth ``(B, 1, H, W)`` = Σ_i p_i · c_i from per-bin logits ``(B, n_bins, H, W)``.

    ``norm="linear"`` (AdaBins; DINOv2 and probe3d default): p = (relu(logits) + eps) / Σ (relu(logits) + eps)
    with eps = 0.1 as in DINOv2 and probe3d (the TIPSv2 release adds min_depth instead). ``"softmax"`` and
    ``"sigmoid"`` (sigmoid then sum-normalise) are AdaBins' alternatives. Centres: :func:`bin_centers`.
    """
    if logits.ndim != 4 or logits.shape[1] != n_bins:
        raise ValueError(f"logits must be (B, {n_bins}, H, W), got {tuple(logits.shape)}")
    if norm == "linear":
        p = F.relu(logits) + eps
        p = p / p.sum(dim=1, keepdim=True)
    elif norm == "softmax":
        p = torch.softmax(logits, dim=1)
    elif norm == "sigmoid":
        p = torch.sigmoid(logits)
        p = p / p.sum(dim=1, keepdim=True)
    else:
        raise ValueError(f"norm must be 'linear', 'softmax' or 'sigmoid', got {norm!r}")
    centers = bin_centers(min_depth, max_depth, n_bins, device=logits.device).to(p.dtype)
    return torch.einsum("bkhw,k->bhw", p, centers).unsqueeze(1)


class BinsDepthHead(nn.Module):
    """Wrap a head with ``n_bins`` outputs into a metric-depth predictor (B, 1, H, W).

    The wrapped head runs at its native resolution, depth is taken there and then resized bilinearly
    (``align_corners=False``) to ``out_size``, as DINOv2's depth heads resize the depth map, not the logits.
    """

    def __init__(
        self,
        head: nn.Module,
        min_depth: float,
        max_depth: float,
        n_bins: int = 256,
        norm: str = "linear",
        eps: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self.head = head
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.n_bins, self.norm, self.eps = int(n_bins), norm, float(eps)

    @property
    def use_cls(self) -> bool:
        return bool(getattr(self.head, "use_cls", False))

    def forward(
        self, maps: Sequence[torch.Tensor], cls: torch.Tensor | Sequence[torch.Tensor] | None = None,
        out_size: Size | None = None,
    ) -> torch.Tensor:
        logits = self.head(maps, cls, out_size=None)
        depth = bins_to_depth(logits, self.min_depth, self.max_depth, self.n_bins, self.norm, self.eps)
        return _resize(depth, out_size)


def to_normals(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a head output ``(B, 3 or 4, H, W)`` into unit normals ``(B, 3, H, W)`` and κ ``(B, 1, H, W)``.

    Normals are the first 3 channels L2-normalised; the 4th channel, if present, becomes the concentration
    κ = elu(x) + 1.01 ≥ 0.01 (probe3d's uncertainty-aware head, after Bae et al. 2021); else κ is None.
    """
    if out.ndim != 4 or out.shape[1] not in (3, 4):
        raise ValueError(f"expected (B, 3 or 4, H, W), got {tuple(out.shape)}")
    normals = unit(out[:, :3], dim=1)
    kappa = F.elu(out[:, 3:4]) + 1.01 if out.shape[1] == 4 else None
    return normals, kappa
