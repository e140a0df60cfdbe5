"""Backbone families: a definition's ``family`` names the loader that builds its backbones.

Each family's module registers its loader with the :func:`register_family` decorator, as task types
register with :func:`tips_bench.tasks.base.register_task_type`. Family modules import heavy libraries
(timm, open_clip) when imported, so none is imported before a backbone of its family is built:
:data:`FAMILY_MODULES` names the module that registers each built-in family, and :func:`family_loader`
imports only that one. A family defined elsewhere registers itself when its module is imported.

A loader is called as ``loader(spec, files, device, **options)``: ``files`` is the backbone's
:class:`~tips_bench.backbones.checkpoints.CheckpointFiles` (None for random weights and weightless
families) and ``options`` those keyword options of :func:`tips_bench.backbones.load_backbone`
(``num_heads``, ``text_num_heads``, ``arch``, ``seed``) that the loader's signature names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tips_bench.errors import TipsBenchError

if TYPE_CHECKING:
    from tips_bench.backbones.base import Backbone
    from tips_bench.backbones.spec import BackboneSpec

#: The module that registers each built-in family (imported on the family's first use).
FAMILY_MODULES: dict[str, str] = {
    "tips": "tips_bench.backbones.tips",
    "dinov2": "tips_bench.backbones.dinov2",
    "clip": "tips_bench.backbones.clip",
    "siglip": "tips_bench.backbones.clip",
    "oracle": "tips_bench.backbones.oracle",
    "pixels": "tips_bench.backbones.pixels",
}


@dataclass(frozen=True)
class Family:
    """A registered family: its loader and the keyword options the loader takes."""

    name: str
    loader: Callable[..., Backbone]
    options: frozenset[str] | None  # None: the loader takes any keyword (``**kwargs``)

    def load(self, spec: BackboneSpec, files: Any, device: str, **options: Any) -> Backbone:
        """Build a backbone, passing only the options the loader names."""
        if self.options is not None:
            options = {k: v for k, v in options.items() if k in self.options}
        return self.loader(spec, files, device, **options)


FAMILIES: dict[str, Family] = {}


def register_family(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering ``loader(spec, files, device, **options)`` as the loader of family ``name``."""

    def decorate(loader: Callable[..., Backbone]) -> Callable[..., Backbone]:
        params = list(inspect.signature(loader).parameters.values())[3:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            options = None
        else:
            options = frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        FAMILIES[name] = Family(name, loader, options)
        return loader

    return decorate


def family_loader(spec: BackboneSpec) -> Family:
    """The registered family of ``spec``, importing its module on first use."""
    if spec.family not in FAMILIES and spec.family in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[spec.family])
    if spec.family not in FAMILIES:
        known = ", ".join(sorted(set(FAMILY_MODULES) | set(FAMILIES)))
        raise TipsBenchError(f"unknown backbone family '{spec.family}' in {spec.path}; known families: {known}")
    return FAMILIES[spec.family]
