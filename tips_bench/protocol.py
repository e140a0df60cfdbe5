"""Typed task protocols: one schema per task type, every default in one place.

A task file's ``protocol:`` mapping (after ``--set`` overrides) is validated against the schema of its
task type before anything is extracted: an unknown key, a value of the wrong type or out of range stops
the run with one sentence naming the key and what it accepts. The validated protocol, defaults filled
in, is what the code reads and what every result row stores.

Schemas are pydantic models (a well-kept validator with precise error locations); this module only
declares them and turns the first validation error into a sentence.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tips_bench.errors import TipsBenchError

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Size = Literal["native"] | PositiveInt
Resolution = Literal["native"] | PositiveInt | tuple[PositiveInt, PositiveInt]
LayerChoice = Literal["last", "last4", "dense"] | list[int]


class Spec(BaseModel):
    """Base of every schema: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------------
# Shared parts
# ---------------------------------------------------------------------------------------------------------


class FrameSpec(Spec):
    """How an image becomes backbone input, and in which frame predictions are scored.

    ``resize``: ``square`` (whole image to ``resolution`` x ``resolution``, aspect not kept), ``keep_aspect``
    (short side to ``short_side``, long side scaled alike and capped at ``max_long_side``; mmseg/DINOv3
    ``FixedSideResize``, TIPS notebook ``ShortSideResize``), ``center_crop`` (short side to ``short_side``,
    then the central ``crop`` x ``crop``: DINOv2's ImageNet evaluation, CLIP's preprocess) or ``none``.
    ``rounding`` of the scaled long side: ``round`` (int(x + 0.5), DINOv3/mmseg) or ``floor`` (int(x), TIPS).
    ``fit`` makes sizes patch multiples: ``pad_center`` (zero padding split evenly, DINOv2 ``CenterPadding``
    and probe3d ``center_padding``; predictions of the padded input are resized to the unpadded size, as
    both do), ``resize_up`` (bicubic resize to the next multiple, TIPS notebook) or ``none`` (must fit).
    ``inference``: ``whole`` or ``slide`` (windows of ``window`` with ``stride``; mmseg ``slide_inference``
    geometry); window outputs are merged by ``mean`` of logits (mmseg) or ``softmax_mean`` (TIPS notebook).
    Dense predictions are always upsampled (bilinear) to the original label size and scored there.
    """

    resize: Literal["square", "keep_aspect", "center_crop", "none"] = "square"
    short_side: Size = "native"
    max_long_side: PositiveInt | None = None
    crop: Size = "native"
    rounding: Literal["round", "floor"] = "round"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    fit: Literal["none", "pad_center", "resize_up"] = "none"
    inference: Literal["whole", "slide"] = "whole"
    window: Size = "native"
    stride: PositiveInt | None = None
    merge: Literal["mean", "softmax_mean"] = "mean"

    @model_validator(mode="after")
    def _slide_needs_stride(self) -> FrameSpec:
        if self.inference == "slide" and self.stride is None:
            raise ValueError("frame.stride is required when frame.inference is 'slide'")
        return self


class CacheRequestSpec(Spec):
    """A feature request shared by several tasks on the same split (one cache entry for all of them)."""

    layers: LayerChoice = "last"
    globals: bool = True
    text_dense: bool | Literal["auto"] = False
    targets: list[str] = Field(default_factory=list)
    pair: bool = False
    max_points: PositiveInt = 64
    layer_norm: bool | Literal["backbone"] = True


class HeadSpec(Spec):
    """A dense probe head: ``linear`` (DINOv2 BNHead) or ``dpt`` (probe3d / TIPS DPT decoder).

    ``cls``: with ``use_cls``, ``own`` concatenates each tapped layer's own CLS token to its patch tokens
    (DINOv2 lin.4, probe3d "dense-cls", TIPS DPT notebook); ``final`` broadcasts the task's global token.
    """

    kind: Literal["linear", "dpt", "oracle"] = "linear"
    layers: Literal["last", "all"] | list[int] = "last"
    use_cls: bool = False
    cls: Literal["own", "final"] = "own"
    upsample: PositiveInt = 1
    hidden: PositiveInt = 256
    batchnorm: bool = True


class ProbeSpec(Spec):
    """The probe's optimisation schedule on cached features (``mode: cached``)."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 8
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegFloat = 1e-4
    warmup_epochs: NonNegFloat = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"


class AugmentSpec(Spec):
    """Training augmentation of ``mode: faithful`` (the reference protocols' pipelines).

    ``rescale``: ratio range of the frame's short side (mmseg ``ratio_range``); ``crop``: random crop (h, w)
    after it, padded with 0 / ignore when the image is smaller, re-drawn up to 10 times while one class
    covers more than ``cat_max_ratio`` of it (mmseg ``RandomCrop``); ``flip``: horizontal flip probability;
    ``photometric``: mmseg ``PhotoMetricDistortion``; ``color_jitter``: torchvision ``ColorJitter(b, c, s, h)``
    applied with probability ``color_jitter_p`` (probe3d); ``resized_crop``: probe3d ``RandomResizedCrop``
    scale range, applied with probability ``resized_crop_p``; ``rotate``: max degrees, with probability
    ``rotate_p`` (depth toolbox); ``color_aug``: the depth toolbox's gamma / brightness / colour jitter.
    """

    rescale: tuple[PositiveFloat, PositiveFloat] | None = None
    crop: tuple[PositiveInt, PositiveInt] | None = None
    cat_max_ratio: Annotated[float, Field(gt=0, le=1)] = 1.0
    flip: Probability = 0.0
    photometric: bool = False
    color_jitter: tuple[NonNegFloat, NonNegFloat, NonNegFloat, Annotated[float, Field(ge=0, le=0.5)]] | None = None
    color_jitter_p: Probability = 0.0
    resized_crop: tuple[Probability, Probability] | None = None
    resized_crop_p: Probability = 0.0
    rotate: NonNegFloat = 0.0
    rotate_p: Probability = 0.0
    color_aug: bool = False
    color_aug_p: Probability = 0.0


class FaithfulSpec(Spec):
    """``mode: faithful``: the reference schedule on augmented views.

    The probe trains ``iterations`` steps (or ``epochs`` passes over the training images) of
    ``probe.batch_size`` augmented views, with ``warmup_iterations`` (or ``warmup_epochs``) of linear warm-up,
    under the probe's optimiser, lr and decay shape. ``views``: augmented views drawn per training image and
    cached (0 = the backbone runs in the loop on a fresh augmentation at every step, as the references do).
    """

    iterations: PositiveInt | None = None
    epochs: PositiveInt | None = None
    warmup_iterations: NonNegInt | None = None
    warmup_epochs: NonNegFloat | None = None
    views: NonNegInt = 8
    augment: AugmentSpec = Field(default_factory=AugmentSpec)

    @model_validator(mode="after")
    def _one_length(self) -> FaithfulSpec:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("faithful needs exactly one of 'iterations' and 'epochs'")
        if self.warmup_iterations is not None and self.warmup_epochs is not None:
            raise ValueError("faithful takes 'warmup_iterations' or 'warmup_epochs', not both")
        return self

    def total_steps(self, num_images: int, batch_size: int) -> int:
        """Optimiser steps of the schedule for a training set of ``num_images`` images."""
        if self.iterations is not None:
            return self.iterations
        return self.epochs * max(1, -(-num_images // batch_size))

    def warmup_steps(self, num_images: int, batch_size: int) -> int:
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return round((self.warmup_epochs or 0.0) * max(1, -(-num_images // batch_size)))


class BaseProtocol(Spec):
    """Keys every task type accepts."""

    resolution: Resolution = "native"
    frame: FrameSpec = Field(default_factory=FrameSpec)
    global_: str | None = Field(default=None, alias="global")
    cache: CacheRequestSpec | None = None
    layers: LayerChoice = "last"
    layer_norm: bool | Literal["backbone"] = True
    render_size: tuple[PositiveInt, PositiveInt] | None = None
    data_seed: NonNegInt = 0
    overrides: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DenseProtocol(BaseProtocol):
    head: HeadSpec = Field(default_factory=HeadSpec)
    probe: ProbeSpec = Field(default_factory=ProbeSpec)
    mode: Literal["cached", "faithful"] = "cached"
    faithful: FaithfulSpec = Field(default_factory=lambda: FaithfulSpec(epochs=10))


class SegmentationProtocol(DenseProtocol):
    ignore_index: Annotated[int, Field(ge=0, le=65535)] = 255


class DepthProtocol(DenseProtocol):
    bins: Annotated[int, Field(ge=2)] = 256
    depth_range: tuple[NonNegFloat, PositiveFloat] = (0.001, 10.0)
    eval_depth_range: tuple[NonNegFloat, PositiveFloat | None] | None = None
    loss: Literal["silog", "dinov2_sigloss", "probe3d"] = "silog"

    @model_validator(mode="after")
    def _range_ordered(self) -> DepthProtocol:
        if self.depth_range[0] >= self.depth_range[1]:
            raise ValueError("depth_range must be [min, max] with min < max")
        return self


class NormalsProtocol(DenseProtocol):
    loss: Literal["angular", "uncertainty"] = "angular"


class KnnProtocol(BaseProtocol):
    ks: list[PositiveInt] = Field(default_factory=lambda: [10, 20, 100, 200])
    temperature: PositiveFloat = 0.07
    headline_k: PositiveInt = 20
    memory_mb: PositiveFloat = 512.0  # working memory of the streamed kNN; no effect on the scores

    @model_validator(mode="after")
    def _headline_in_ks(self) -> KnnProtocol:
        if self.headline_k not in self.ks:
            raise ValueError(f"headline_k {self.headline_k} must be one of ks {self.ks}")
        return self


class LinearProbeSpec(ProbeSpec):
    """The linear probe on global embeddings (DINOv2's linear evaluation as parallel heads).

    ``lr_grid``: one head per learning rate, trained in the same pass (default: ``[lr]``), each scaled by
    ``batch_size / lr_reference_batch`` when that is set; the best head is picked by top-1 on ``val_fraction`` of
    train (seeded by ``val_seed``). ``init``: torch's default or DINOv2's N(0, 0.01). Epoch order: blocks of
    ``shuffle_block`` rows in random order, shuffled ``shuffle_window`` rows at a time (bounded memory).
    """

    lr_grid: list[PositiveFloat] | None = None
    lr_reference_batch: PositiveFloat | None = None
    init: Literal["torch", "normal"] = "torch"
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    val_seed: int = 0
    shuffle_block: PositiveInt = 32
    shuffle_window: PositiveInt = 65536

    @model_validator(mode="after")
    def _grid_needs_holdout(self) -> LinearProbeSpec:
        if self.lr_grid and len(self.lr_grid) > 1 and self.val_fraction <= 0:
            raise ValueError("a learning-rate grid needs val_fraction > 0 to pick its head")
        return self


class LinearClassificationProtocol(BaseProtocol):
    probe: LinearProbeSpec = Field(default_factory=lambda: LinearProbeSpec(epochs=100, batch_size=256))
    standardize: bool = True


class KnnRetrievalProtocol(BaseProtocol):
    pass


class ZeroShotClassificationProtocol(BaseProtocol):
    templates: Literal["openai_imagenet", "tcl", "simple"] = "simple"
    max_templates: PositiveInt | None = None


class RetrievalProtocol(BaseProtocol):
    captions: Literal["all"] | NonNegInt = "all"


class ZeroShotSegmentationProtocol(BaseProtocol):
    templates: Literal["openai_imagenet", "tcl", "simple"] = "tcl"
    max_templates: PositiveInt | None = None
    ignore_index: Annotated[int, Field(ge=0, le=65535)] = 255


class CorrespondenceProtocol(BaseProtocol):
    layer: int = -1
    upsample: PositiveInt = 4
    thresholds_px: list[PositiveFloat] = Field(default_factory=lambda: [5.0, 10.0, 20.0])
    pck_alpha: PositiveFloat = 0.1
    max_points: PositiveInt = 64


PROTOCOLS: dict[str, type[BaseProtocol]] = {
    "segmentation": SegmentationProtocol,
    "depth": DepthProtocol,
    "normals": NormalsProtocol,
    "knn": KnnProtocol,
    "linear_classification": LinearClassificationProtocol,
    "knn_retrieval": KnnRetrievalProtocol,
    "zeroshot_classification": ZeroShotClassificationProtocol,
    "retrieval": RetrievalProtocol,
    "zeroshot_segmentation": ZeroShotSegmentationProtocol,
    "correspondence": CorrespondenceProtocol,
}


def register_protocol(task_type: str, schema: type[BaseProtocol]) -> None:
    """Declare the protocol schema of a task type added by another package."""
    PROTOCOLS[task_type] = schema


def validate_protocol(task_name: str, task_type: str, protocol: dict[str, Any]) -> BaseProtocol:
    """The typed protocol of a task, or one sentence naming the first bad key and what it accepts."""
    schema = PROTOCOLS.get(task_type)
    if schema is None:
        known = ", ".join(sorted(PROTOCOLS))
        raise TipsBenchError(f"task {task_name} has unknown type '{task_type}'; known types: {known}")
    try:
        return schema.model_validate(protocol)
    except ValidationError as exc:
        raise TipsBenchError(f"task {task_name}: {describe_error(exc, schema)}") from None


def protocol_dict(spec: BaseProtocol) -> dict[str, Any]:
    """The validated protocol as plain data (defaults filled in, ``global`` under its YAML name)."""
    return spec.model_dump(mode="json", by_alias=True)


def describe_error(exc: ValidationError, schema: type[BaseModel]) -> str:
    """The first error of a validation as one sentence: the dotted key, what is wrong, what is accepted."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal[", "tuple[", "list["))]
    key = ".".join(loc)
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        parent = _submodel(schema, loc[:-1])
        known = ", ".join(sorted(_field_names(parent))) if parent is not None else ""
        return f"protocol key '{key}' is not a known key; accepted keys here: {known}"
    if kind == "missing":
        return f"protocol key '{key}' is required"
    if kind == "value_error":
        what = f"protocol key '{key}' is" if loc else "the protocol is"
        return f"{what} invalid: {err['msg'].removeprefix('Value error, ')}"
    accepted = _accepted(schema, loc)
    if " or " in accepted:  # a union: pydantic's message names only its first member
        return f"protocol key '{key}' has value {given!r}; accepted: {accepted}"
    hint = f"; accepted: {accepted}" if accepted else ""
    return f"protocol key '{key}' has value {given!r}, which is not valid ({err['msg'].lower()}){hint}"


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _submodel(schema: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    model: Any = schema
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = _model_of(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _accepted(schema: type[BaseModel], loc: list[str]) -> str:
    """A short description of what a field accepts (its type annotation, readably)."""
    parent = _submodel(schema, [p for p in loc[:-1] if not p.isdigit()])
    leaf = next((p for p in reversed(loc) if not p.isdigit()), None)
    if parent is None or leaf is None:
        return ""
    field = next((f for n, f in parent.model_fields.items() if leaf in (n, f.alias)), None)
    if field is None:
        return ""
    text = _type_text(field.annotation)
    bounds = [f"{sym} {getattr(meta, attr)}" for meta in field.metadata for attr, sym in _BOUNDS
              if getattr(meta, attr, None) is not None]
    return f"{text} {' and '.join(bounds)}" if bounds else text


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _type_text(annotation: Any) -> str:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        bounds = [f"{sym} {getattr(m, attr)}" for meta in args[1:] for m in getattr(meta, "metadata", [meta])
                  for attr, sym in _BOUNDS if getattr(m, attr, None) is not None]
        return f"{_type_text(args[0])} {' and '.join(bounds)}" if bounds else _type_text(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_text(a) for a in args)
    if origin in (list, tuple):
        inner = ", ".join(_type_text(a) for a in args if a is not Ellipsis)
        return f"{'list' if origin is list else 'pair'} of ({inner})" if inner else origin.__name__
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
