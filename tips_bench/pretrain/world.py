"""The pretraining stream: images with their two captions, rendered on the fly by the seeded world.

Batch ``k`` holds scenes ``k * B ... (k + 1) * B - 1`` of the world's ``pretrain`` split, so every
batch is a pure function of ``(seed, image size, batch size, k)``. The split name enters the
scene seeds (``SeedSequence([seed, kind, crc32(split), index])``) and no task uses it, so no
pretraining scene is an evaluation scene.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from tips_bench.data.synthetic import SceneDataset, long_caption, make_scene, scene_camera, short_caption

#: The world split the image stream is drawn from (never used by a task).
PRETRAIN_SPLIT = "pretrain"
#: The split whose scenes' captions train the tokenizer (never used by a task).
TOKENIZER_SPLIT = "pretrain-tokenizer"
#: A stream is endless in practice; the dataset only needs an upper bound on the index.
_STREAM_LENGTH = 2**40


@dataclass
class WorldBatch:
    """One batch: pixels in [0, 1] (B, 3, H, W) and the short (alt-text) and long (spatial) captions."""

    images: torch.Tensor
    short: list[str]
    long: list[str]


class WorldStream(torch.utils.data.Dataset):
    """Item ``k`` is batch ``k`` of the pretraining stream (a map-style dataset of batches)."""

    def __init__(self, image_size: int, batch_size: int, seed: int, num_batches: int = _STREAM_LENGTH):
        self.scenes = SceneDataset(PRETRAIN_SPLIT, _STREAM_LENGTH, (image_size, image_size), seed=seed)
        self.batch_size = int(batch_size)
        self.num_batches = int(num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, k: int) -> WorldBatch:
        samples = [self.scenes[k * self.batch_size + i] for i in range(self.batch_size)]
        images = np.stack([s["image"] for s in samples]).transpose(0, 3, 1, 2)
        return WorldBatch(
            images=torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0),
            short=[s["captions"][0] for s in samples],
            long=[s["captions"][1] for s in samples],
        )


def _identity(batch: WorldBatch) -> WorldBatch:
    return batch


def batch_loader(stream: WorldStream, start: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches ``start, start + 1, ...`` in order; ``workers`` processes render ahead of the model."""
    indices = range(start, len(stream))
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(stream, indices), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_identity, prefetch_factor=2 if workers else None, persistent_workers=False,
    )


def caption_corpus(seed: int, num_scenes: int) -> list[str]:
    """Short and long captions of ``num_scenes`` world scenes (all objects named, nothing rendered).

    The scenes come from their own split, so the tokenizer never sees an evaluation caption.
    """
    lines: list[str] = []
    for index in range(num_scenes):
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(TOKENIZER_SPLIT.encode()), index]))
        scene = make_scene(rng)
        _, pose, _ = scene_camera(rng, scene, (224, 224))
        lines.append(short_caption(scene, rng))
        lines.append(long_caption(scene, pose, None, rng))
    return lines
