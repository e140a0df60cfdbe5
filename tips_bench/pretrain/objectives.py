"""What a recipe trains and how its losses are computed for one batch (EMA teacher and centres included)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tips_bench.backbones.tips_text import MAX_LEN, TipsTokenizer
from tips_bench.pretrain import losses as L
from tips_bench.pretrain.config import PretrainConfig
from tips_bench.pretrain.models import CaptionDecoder, ImageTower, ProjectionHead, TowerSizes, text_tower
from tips_bench.pretrain.recipes import Recipe
from tips_bench.pretrain.views import local_crops, random_masks
from tips_bench.pretrain.world import WorldBatch


class Models(torch.nn.Module):
    """Every trained module of a recipe (absent parts are None) and the learned temperature."""

    def __init__(self, recipe: type[Recipe], sizes: TowerSizes, vocab_size: int):
        super().__init__()
        self.image = ImageTower(sizes)
        self.text = text_tower(vocab_size, sizes) if recipe.has_text_tower() else None
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))) if recipe.contrast else None
        self.head = ProjectionHead(sizes) if recipe.self_distillation else None
        self.decoder = CaptionDecoder(vocab_size, MAX_LEN + 1, sizes) if recipe.caption else None


def param_groups(models: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases, norms, tokens, positions and the temperature."""
    decay, no_decay = [], []
    for name, p in models.named_parameters():
        (decay if p.ndim >= 2 and "pos" not in name and "token" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class CaptionEncoder:
    """Captions -> (ids, paddings, lengths) tensors with the evaluation tokenizer, cut to the longest row."""

    def __init__(self, model_file: Path, device: str):
        self.tokenizer, self.device = TipsTokenizer(model_file), device

    def __call__(self, texts: list[str], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, paddings = self.tokenizer(texts)
        lengths = (paddings == 0).sum(1)
        width = min(MAX_LEN, int(lengths.max()) + extra)
        ids, paddings = ids[:, :width], paddings[:, :width]
        if extra and width < int(lengths.max()) + extra:  # room for the end token of a 64-token caption
            ids = np.pad(ids, ((0, 0), (0, extra)))
            paddings = np.pad(paddings, ((0, 0), (0, extra)), constant_values=1)
        return (torch.from_numpy(ids).to(self.device), torch.from_numpy(paddings).to(self.device),
                torch.from_numpy(lengths).to(self.device))


class Objective:
    """One recipe's loss computation; holds the EMA teacher and the centres."""

    def __init__(self, recipe: type[Recipe], models: Models, config: PretrainConfig, encode: CaptionEncoder):
        self.recipe, self.models, self.config, self.encode = recipe, models, config, encode
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.teacher = self.teacher_head = None
        if recipe.self_distillation:
            self.teacher = copy.deepcopy(models.image).requires_grad_(False)
            self.teacher_head = copy.deepcopy(models.head).requires_grad_(False)
            k = config.sizes.prototypes
            self.center_cls = torch.zeros(1, k, device=config.device)
            self.center_patch = torch.zeros(1, k, device=config.device)

    def losses(self, batch: WorldBatch) -> dict[str, torch.Tensor]:
        c, m, device = self.config, self.models, self.config.device
        images = batch.images.to(device)
        mask = None
        if self.recipe.self_distillation:
            mask = random_masks(len(images), c.sizes.grid, c, self.generator).to(device)
        tokens = m.image(images, mask)
        out: dict[str, torch.Tensor] = {}
        if self.recipe.contrast:
            texts = {"short": batch.short, "long": batch.long}
            embedded = {kind: m.text(*self.encode(texts[kind])[:2]) for kind in {k for _, k in self.recipe.contrast}}
            terms = [L.contrastive_loss(tokens[:, index], embedded[kind], m.log_scale)
                     for index, kind in self.recipe.contrast]
            out["clip"] = sum(terms) / len(terms)
        if self.recipe.self_distillation:
            out.update(self._self_distillation(images, tokens, mask))
        if self.recipe.caption:
            ids, _, lengths = self.encode(batch.long, extra=1)
            out["caption"] = L.caption_loss(m.decoder(ids, tokens[:, 2:]), ids, lengths)
        return out

    def _self_distillation(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        c, m = self.config, self.models
        with torch.no_grad():
            t_tokens = self.teacher(images)
            t_cls, t_patch = self.teacher_head(t_tokens[:, 0]), self.teacher_head(t_tokens[:, 2:])
            target_cls = L.teacher_targets(t_cls, self.center_cls, c.teacher_temperature)
            target_patch = L.teacher_targets(t_patch, self.center_patch, c.teacher_temperature)
        crops = local_crops(images, c, self.generator)
        s_local = m.head(m.image(crops)[:, 0]).view(c.local_crops, len(images), -1)
        dino = L.distillation_loss(s_local, target_cls[None], c.student_temperature).mean()
        s_patch = m.head(tokens[:, 2:])
        ibot = L.masked_patch_loss(s_patch, target_patch, mask.flatten(1), c.student_temperature)
        L.update_center(self.center_cls, t_cls, c.center_momentum)
        L.update_center(self.center_patch, t_patch, c.center_momentum)
        return {"dino": dino, "ibot": ibot}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        if self.teacher is None:
            return
        for student, teacher in ((self.models.image, self.teacher), (self.models.head, self.teacher_head)):
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
