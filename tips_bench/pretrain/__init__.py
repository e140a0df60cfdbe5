"""A miniature TIPS study: pretrain tiny image-text towers on the synthetic world.

``tips-bench pretrain --recipe NAME --out DIR`` trains a tiny TIPS-architecture ViT and text tower
on images and captions rendered on the fly by the seeded world (a split no evaluation task uses) and
writes them in the official TIPS ``.npz`` layout, so the normal ``tips`` loader reads them.

Modules: :mod:`world` (the image/caption stream), :mod:`tokenizer` (a tiny SentencePiece model
trained on world captions), :mod:`models` (towers, heads, caption decoder), :mod:`losses`,
:mod:`recipes` (the registry of training recipes), :mod:`config` (a run's settings and its rebuild
command), :mod:`views` (masks and local crops), :mod:`objectives` (a recipe's losses per batch),
:mod:`trainer` (the deterministic loop), :mod:`export` (official-layout files and ``recipe.json``).
"""

from __future__ import annotations

from tips_bench.pretrain.recipes import RECIPES, get_recipe

__all__ = ["RECIPES", "get_recipe"]
