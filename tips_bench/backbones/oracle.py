"""The ``oracle`` self-test backbone: features that encode the ground truth of the views it encodes.

It ignores the pixels and reads the view-aligned ground truth the extraction step hands to backbones
that declare the ``ground_truth`` capability. Every task therefore has a known optimum on its features:
a correct pipeline (frames, caches, probes, metrics) must reach it, and a broken one shows at once.

Patch features (D = :data:`DIM`), the same at every one of its :data:`NUM_LAYERS` blocks, per patch:

* ``[0, 256)``: the fraction of the patch's labelled pixels of each class (label = slot, 255 = ignore);
* ``256``: mean depth of its valid pixels (the view's mean where it has none), ``257 .. 257 + 32``: the same
  depth as a triangular code over 32 log-spaced anchors from 1 cm to 100 m (linearly decodable by a binned head);
* the next 3: the mean unit normal of its valid pixels (the view's mean where it has none);
* the last 256: the identity codes of the keypoints (pairs), each weighted by a Gaussian of its distance to the
  patch centre (sigma = half a patch), plus a constant background code, so that the cosine of interpolated
  features peaks at each keypoint's own position.

Global embedding ``embedding`` (and text embeddings), D_text = 1024 + 16 + 512: a one-hot of the image's
class label; a code of its domain (UnED); for images without a class label, the normalised sum of the codes of
their captions. The text tower
maps a caption to its code and a prompt that contains a class name (of the classes the oracle is bound
to, longest name first) to that class's one-hot, so zero-shot classification, retrieval and zero-shot
segmentation (``text_dense``: the class fractions in text space) reach their optimum too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tips_bench.backbones.base import Backbone, Features
from tips_bench.backbones.families import register_family
from tips_bench.backbones.spec import BackboneSpec

SEG_SLOTS = 256
DEPTH_CH = SEG_SLOTS
ANCHORS = np.geomspace(0.01, 100.0, 32)
DEPTH_CODE = slice(DEPTH_CH + 1, DEPTH_CH + 1 + len(ANCHORS))
NORMALS = slice(DEPTH_CODE.stop, DEPTH_CODE.stop + 3)
KEYPOINTS = slice(NORMALS.stop, NORMALS.stop + 256)
DIM = KEYPOINTS.stop
NUM_LAYERS = 4
CLASS_SLOTS, DOMAIN_DIM, CAPTION_DIM = 1024, 16, 512
TEXT_DIM = CLASS_SLOTS + DOMAIN_DIM + CAPTION_DIM
IGNORE = 255
BACKGROUND = 0.3  # weight of the constant background code of the keypoint channels


def code(text: str, dim: int) -> np.ndarray:
    """A fixed random unit vector for a string (sha256-seeded), the same in every process."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def depth_code(depth: torch.Tensor) -> torch.Tensor:
    """Triangular code (…, 32) of depths over log-spaced anchors; 0 for depth <= 0."""
    logs = torch.log(torch.as_tensor(ANCHORS, dtype=torch.float32))
    x = torch.log(depth.clamp_min(1e-6))[..., None]
    step = float(logs[1] - logs[0])
    w = (1 - (x - logs).abs() / step).clamp_min(0)
    return torch.where(depth[..., None] > 0, w, torch.zeros_like(w))


class OracleBackbone(Backbone):
    """See the module docstring. Stateless apart from the class names it is bound to (for prompts)."""

    sees_targets = True

    def __init__(self, spec: BackboneSpec, device: str | torch.device = "cpu"):
        super().__init__(spec, device)
        self.embed_dim = DIM
        self.num_layers = NUM_LAYERS
        self.text_dim = TEXT_DIM
        self.class_names: list[str] = []

    @property
    def global_names(self) -> tuple[str, ...]:
        return ("embedding",)

    def bind_classes(self, names: Sequence[str]) -> None:
        """The class names prompts are matched against (the evaluated dataset's)."""
        self.class_names = [str(n) for n in names]

    # -- images ------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, layers: list[int], text_dense: bool, norm: bool = True, **kw) -> Features:
        targets = kw.get("targets") or {}
        b, _, height, width = x.shape
        p = self.patch_size
        h, w = height // p, width // p
        dense = torch.zeros(b, h, w, DIM)
        if "seg" in targets:
            dense[..., :SEG_SLOTS] = _class_fractions(targets["seg"].long(), p)
        if "depth" in targets:
            valid = targets.get("depth_valid", targets["depth"] > 0).bool() & (targets["depth"] > 0)
            depth = _fill_empty(_masked_mean(targets["depth"].float()[..., None], valid, p), valid, p)[..., 0]
            dense[..., DEPTH_CH] = depth
            dense[..., DEPTH_CODE] = depth_code(depth)
        if "normals" in targets:
            valid = targets.get("normals_valid", torch.ones(targets["normals"].shape[:3], dtype=torch.bool)).bool()
            normals = _fill_empty(_masked_mean(targets["normals"].float(), valid, p), valid, p)
            dense[..., NORMALS] = F.normalize(normals, dim=-1)
        if "points" in targets:
            dense[..., KEYPOINTS] = _keypoint_codes(targets["points"], targets["points_valid"], p, h, w)
        maps = dense.permute(0, 3, 1, 2).contiguous().to(self.device)
        cls = maps.mean(dim=(2, 3))
        feats = Features(globals={"embedding": self._image_global(targets, b)},
                         patches={i: maps for i in layers}, layer_cls={i: cls for i in layers})
        if text_dense:
            text = torch.zeros(b, TEXT_DIM, h, w, device=self.device)
            text[:, :SEG_SLOTS] = maps[:, :SEG_SLOTS]
            feats.text_dense = text
        return feats

    def _image_global(self, targets: dict, b: int) -> torch.Tensor:
        out = np.zeros((b, TEXT_DIM), np.float32)
        labels = targets.get("label")
        label_sets = targets.get("label_set")
        captions = targets.get("captions") or [[] for _ in range(b)]
        domains = targets.get("domain") or ["" for _ in range(b)]
        for i in range(b):
            label = int(labels[i]) if labels is not None else -1
            classes = [int(c) for c in label_sets[i]] if label_sets is not None else [label]
            classes = [c for c in classes if 0 <= c < CLASS_SLOTS]
            if classes:  # every class id of the image (UnED items can have several)
                out[i, classes] = 1.0 / np.sqrt(len(classes))
            if domains[i]:
                out[i, CLASS_SLOTS : CLASS_SLOTS + DOMAIN_DIM] = code("domain:" + domains[i], DOMAIN_DIM)
            if captions[i] and not 0 <= label < CLASS_SLOTS:  # labelled images are identified by class only
                caps = sum(code(_norm(c), CAPTION_DIM) for c in captions[i])
                out[i, CLASS_SLOTS + DOMAIN_DIM :] = caps / max(np.linalg.norm(caps), 1e-12)
        return torch.from_numpy(out).to(self.device)

    # -- text --------------------------------------------------------------------------------------
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(self.class_names)), key=lambda k: (-len(self.class_names[k]), k))
        out = np.zeros((len(texts), TEXT_DIM), np.float32)
        for i, text in enumerate(texts):
            t = _norm(text)
            k = next((k for k in order if self.class_names[k].lower() in t), None)
            if k is not None and k < CLASS_SLOTS:
                out[i, k] = 1.0
            out[i, CLASS_SLOTS + DOMAIN_DIM :] = code(t, CAPTION_DIM)
        return torch.from_numpy(out).to(self.device)

    @property
    def logit_scale(self) -> float:
        return 100.0


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _class_fractions(seg: torch.Tensor, p: int) -> torch.Tensor:
    """(B, H, W) labels -> (B, h, w, 256) fraction of each label among the labelled pixels of each patch."""
    b, height, width = seg.shape
    h, w = height // p, width // p
    patch = (torch.arange(height)[:, None] // p) * w + torch.arange(width)[None, :] // p
    idx = (torch.arange(b)[:, None, None] * (h * w) + patch[None]) * SEG_SLOTS + seg.clamp(0, SEG_SLOTS - 1)
    keep = (seg != IGNORE) & (seg >= 0)
    counts = torch.bincount(idx[keep], minlength=b * h * w * SEG_SLOTS).view(b, h, w, SEG_SLOTS).float()
    return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)


def _masked_mean(value: torch.Tensor, valid: torch.Tensor, p: int) -> torch.Tensor:
    """(B, H, W, C) values averaged over the valid pixels of each patch -> (B, h, w, C) (0 if none)."""
    v = (value * valid[..., None]).permute(0, 3, 1, 2)
    s = F.avg_pool2d(v, p) * p * p
    n = F.avg_pool2d(valid[:, None].float(), p) * p * p
    return (s / n.clamp_min(1.0)).permute(0, 2, 3, 1)


def _fill_empty(per_patch: torch.Tensor, valid: torch.Tensor, p: int) -> torch.Tensor:
    """Patches without a valid pixel (padding, sky) take the view's mean over its valid pixels, so that upsampled
    predictions near them are not pulled towards zero."""
    has = F.avg_pool2d(valid[:, None].float(), p)[:, 0] > 0  # (B, h, w)
    counts = has.sum(dim=(1, 2)).clamp_min(1)[:, None]
    mean = (per_patch * has[..., None]).sum(dim=(1, 2)) / counts  # (B, C)
    return torch.where(has[..., None], per_patch, mean[:, None, None, :])


def _keypoint_codes(points: torch.Tensor, valid: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    dim = KEYPOINTS.stop - KEYPOINTS.start
    codes = torch.from_numpy(np.stack([code(f"keypoint:{k}", dim) for k in range(points.shape[1])]))
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * p - 0.5  # patch centres, pixel-centre coordinates
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * p - 0.5
    out = torch.zeros(points.shape[0], h, w, dim)
    sigma2 = 2 * (p / 2) ** 2
    for i in range(points.shape[0]):
        keep = valid[i].bool()
        pts, ids = points[i][keep].float(), torch.nonzero(keep).flatten()
        if not len(ids):
            continue
        d2 = (cy[:, None, None] - pts[None, None, :, 1]) ** 2 + (cx[None, :, None] - pts[None, None, :, 0]) ** 2
        out[i] = torch.exp(-d2 / sigma2) @ codes[ids]
    # a constant background direction: cosine matching is scale-free, and without it a far patch that a
    # single keypoint's tail reaches would match as well as the keypoint's own patch
    return out + BACKGROUND * torch.from_numpy(code("keypoint:background", dim))


@register_family("oracle")
def load_oracle(spec: BackboneSpec, files: None, device: str) -> OracleBackbone:
    """The oracle reads no weights (``files`` is always None)."""
    return OracleBackbone(spec, device)


class OracleHead(torch.nn.Module):
    """``head.kind: oracle``: decodes the oracle's channels with no training (the optimum of a dense task).

    Segmentation: the class fractions of the first ``channels`` classes as logits, restricted to ``classes``
    (those present in the training split: a trained probe cannot predict the others); depth: the mean depth;
    normals: the mean normal. Used by ``tips-bench selftest`` to measure what the frame and metrics allow.
    """

    use_cls = False

    def __init__(self, kind: str, channels: int, classes: Sequence[int] | None = None):
        super().__init__()
        self.kind, self.channels = kind, channels
        mask = torch.zeros(channels, dtype=torch.bool)
        mask[[c for c in (classes if classes is not None else range(channels)) if 0 <= c < channels]] = True
        self.register_buffer("unseen", ~mask)  # classes a trained probe never sees cannot be predicted

    def forward(self, maps, cls=None, out_size=None) -> torch.Tensor:
        x = maps[-1]
        if x.shape[1] != DIM:
            raise ValueError("head.kind oracle decodes the oracle backbone's features only; use --backbone oracle")
        if self.kind == "segmentation":
            out = x[:, : self.channels].masked_fill(self.unseen[None, :, None, None], -1.0)
        elif self.kind == "depth":
            out = x[:, DEPTH_CH : DEPTH_CH + 1]
        else:
            out = x[:, NORMALS]
        if out_size is not None and tuple(out.shape[-2:]) != tuple(out_size):
            out = F.interpolate(out, size=tuple(out_size), mode="bilinear", align_corners=False)
        return out
