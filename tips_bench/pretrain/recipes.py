"""The registry of pretraining recipes: which losses train which outputs.

A recipe is a small declarative class registered with :func:`register_recipe`:

* ``contrast``: pairs ``(CLS index, caption kind)``; each pair adds a symmetric InfoNCE loss with a
  learned temperature between that CLS token and the text tower's embedding of that caption
  (``short`` = noisy alt-text, ``long`` = spatial description). Two pairs = TIPS's two CLS tokens.
* ``self_distillation``: an EMA teacher on the full image; the student sees the image with masked
  patches (iBOT masked image modeling on the patch tokens) and local crops (DINO loss on CLS 1).
* ``caption``: a tiny transformer decoder predicts the spatial description from the patch tokens.
"""

from __future__ import annotations

from typing import ClassVar

from tips_bench.errors import TipsBenchError

CAPTION_KINDS = ("short", "long")


class Recipe:
    """Base class; subclasses set the class attributes below and are registered by name."""

    name: ClassVar[str]
    summary: ClassVar[str]
    contrast: ClassVar[tuple[tuple[int, str], ...]] = ()
    self_distillation: ClassVar[bool] = False
    caption: ClassVar[bool] = False
    #: What the paper (or the question) expects, for the study's page.
    paper_note: ClassVar[str] = ""

    @classmethod
    def has_text_tower(cls) -> bool:
        """Contrastive recipes train a text encoder; the captioning recipe has none."""
        return bool(cls.contrast)


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: add a recipe to :data:`RECIPES` (names are unique)."""
    if cls.name in RECIPES:
        raise ValueError(f"recipe {cls.name} is registered twice")
    for index, kind in cls.contrast:
        if index not in (0, 1) or kind not in CAPTION_KINDS:
            raise ValueError(f"recipe {cls.name}: bad contrast pair ({index}, {kind})")
    RECIPES[cls.name] = cls
    return cls


def get_recipe(name: str) -> type[Recipe]:
    """A recipe by name, or an error listing the known ones."""
    if name not in RECIPES:
        raise TipsBenchError(f"unknown recipe '{name}'; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


@register_recipe
class ClipNoisy(Recipe):
    name = "clip_noisy"
    summary = "CLIP: InfoNCE between CLS 1 and the short noisy alt-text"
    contrast = ((0, "short"),)


@register_recipe
class ClipSynthetic(Recipe):
    name = "clip_synthetic"
    summary = "CLIP: InfoNCE between CLS 1 and the long spatial description"
    contrast = ((0, "long"),)


@register_recipe
class TipsDual(Recipe):
    name = "tips_dual"
    summary = "TIPS dual CLS: CLS 1 with the alt-text, CLS 2 with the spatial description"
    contrast = ((0, "short"), (1, "long"))


@register_recipe
class TipsFull(Recipe):
    name = "tips_full"
    summary = "tips_dual + EMA-teacher self-distillation (DINO on local crops) + masked image modeling (iBOT)"
    contrast = ((0, "short"), (1, "long"))
    self_distillation = True


@register_recipe
class CapMim(Recipe):
    name = "cap_mim"
    summary = "caption decoder predicting the spatial description from patch tokens + the tips_full self-distillation"
    self_distillation = True
    caption = True
