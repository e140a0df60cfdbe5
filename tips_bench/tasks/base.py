"""Task definitions (``tasks/<name>.yaml``) and the plugin contract of task types.

A definition names its type, dataset, splits, protocol (resolution, layers, global token,
head, probe schedule, seed) and metrics, with a version that is bumped whenever the protocol
changes. A task type (one module per type in this package) turns it into datasets, a feature
request for the cache, and metrics computed from cached features only.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError

from tips_bench.backbones.spec import BackboneSpec
from tips_bench.cache import CacheEntry
from tips_bench.errors import CapabilityError, TipsBenchError
from tips_bench.frames import Frame
from tips_bench.protocol import BaseProtocol, Spec, describe_error, protocol_dict, validate_protocol
from tips_bench.registry import get_definition, load_definitions


@dataclass(frozen=True)
class SplitSpec:
    """One role of a task (``train`` or ``eval``): dataset split and, for synthetic data, its size."""

    split: str
    size: int | None = None


class _SplitFile(Spec):
    split: str
    size: int | None = Field(default=None, ge=1)


class _DatasetFile(Spec):
    name: str
    splits: dict[Literal["train", "eval"], _SplitFile]
    options: dict[str, Any] = Field(default_factory=dict)


class TaskFile(Spec):
    """The schema of ``tasks/<name>.yaml`` (top level; ``protocol`` is checked by the task type's schema)."""

    name: str
    version: int = Field(ge=1)
    type: str
    suite: str | None = None
    description: str = ""
    dataset: _DatasetFile
    protocol: dict[str, Any] = Field(default_factory=dict)
    metrics: list[str] = Field(min_length=1)
    lower_is_better: list[str] = Field(default_factory=list)
    headline: str | None = None
    references: list[str] = Field(default_factory=list)
    notes: str = ""


@dataclass(frozen=True)
class TaskDefinition:
    """The typed form of ``tasks/<name>.yaml``: its fields and its validated protocol."""

    name: str
    version: int
    type: str
    description: str
    dataset: str
    splits: dict[str, SplitSpec]
    dataset_options: dict[str, Any]
    protocol: dict[str, Any]
    metrics: tuple[str, ...]
    headline: str
    higher_is_better: dict[str, bool]
    spec: BaseProtocol
    suite: str | None = None
    references: tuple[str, ...] = ()
    notes: str = ""
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskDefinition:
        """Validate a task file's contents (top-level schema, then the task type's protocol schema)."""
        where = data.get("_path") or data.get("name") or "a task definition"
        try:
            f = TaskFile.model_validate({k: v for k, v in data.items() if k != "_path"})
        except ValidationError as exc:
            problem = describe_error(exc, TaskFile).replace("protocol key", "key")
            raise TipsBenchError(f"task definition {where}: {problem}; see docs/tasks.md for the schema") from None
        spec = validate_protocol(f.name, f.type, f.protocol)
        lower = set(f.lower_is_better)
        headline = f.headline or f.metrics[0]
        if headline not in f.metrics:
            raise TipsBenchError(f"task {f.name}: headline '{headline}' is not among its metrics {f.metrics}")
        if unknown := lower - set(f.metrics):
            raise TipsBenchError(f"task {f.name}: lower_is_better names {sorted(unknown)}, which are not metrics of it")
        return cls(
            name=f.name, version=f.version, type=f.type, description=f.description, dataset=f.dataset.name,
            splits={role: SplitSpec(s.split, s.size) for role, s in f.dataset.splits.items()},
            dataset_options=dict(f.dataset.options), protocol=protocol_dict(spec), metrics=tuple(f.metrics),
            headline=headline, higher_is_better={m: m not in lower for m in f.metrics}, spec=spec, suite=f.suite,
            references=tuple(f.references), notes=f.notes, path=data.get("_path", ""), raw=data,
        )

    def with_overrides(self, overrides: dict[str, Any]) -> TaskDefinition:
        """A copy with dotted protocol keys replaced (``probe.epochs=1``), validated again.

        The overrides are recorded under ``protocol['overrides']`` of every result row.
        """
        if not overrides:
            return self
        protocol = copy.deepcopy(self.raw.get("protocol") or {})
        for dotted, value in overrides.items():
            node = protocol
            *parents, leaf = dotted.split(".")
            for key in parents:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise TipsBenchError(f"--set {dotted}: '{key}' is not a mapping in task {self.name}'s protocol "
                                         f"(it is {child!r}); set '{key}' itself instead")
                node = child
            _check_override_value(self.name, dotted, node.get(leaf), value)
            node[leaf] = value
        protocol["overrides"] = dict(overrides)
        return TaskDefinition.from_dict({**self.raw, "protocol": protocol})

    def p(self, key: str, default: Any = None) -> Any:
        """A protocol value (validated, defaults filled in)."""
        value = self.protocol.get(key)
        return default if value is None else value


def get_task_definition(name: str) -> TaskDefinition:
    return TaskDefinition.from_dict(get_definition("tasks", name))


def all_task_definitions() -> list[TaskDefinition]:
    return [TaskDefinition.from_dict(d) for _, d in sorted(load_definitions("tasks").items())]


@dataclass(frozen=True)
class FeatureRequest:
    """What the cache must hold for one split: feature arrays and ground-truth targets.

    ``target_frame``: dense targets at the original label size (``original``, where metrics are computed)
    or resized to the frame's resized image (``input``, to train probes on views). ``layer_norm``: tapped
    blocks after the final norm or raw. ``oracle``: also pass view-aligned ground truth to the backbone
    (set by the runner for backbones that read it).
    """

    layers: str | tuple[int, ...] = "last"   # 'last', 'last4', 'dense' or explicit block indices
    globals: bool = True
    text_dense: bool = False
    targets: tuple[str, ...] = ()            # sample keys stored next to the features
    pair: bool = False                       # samples are image pairs (correspondence)
    max_points: int = 64                     # pairs: keypoints padded (invalid) or cut to this count
    layer_norm: bool = True
    target_frame: str = "original"
    oracle: bool = False


@dataclass
class EvalContext:
    """What a task's ``evaluate`` may use: cache entries per role and a cached text encoder."""

    entries: dict[str, CacheEntry]
    datasets: dict[str, Any]
    backbone: BackboneSpec
    global_name: str
    layer_names: list[str]
    encode_texts: Callable[[list[str]], np.ndarray]
    seed: int
    device: str
    batch_size: int
    progress: bool
    frame: Frame | None = None
    load_backbone: Callable[[], Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def batches(self, role: str, names: list[str], batch_size: int | None = None, seed: int | None = None
                ) -> Iterator[dict[str, np.ndarray]]:
        return self.entries[role].iter_batches(names, batch_size or self.batch_size, seed=seed)


class Task(ABC):
    """A task type. Subclasses set ``type_name`` and ``needs`` and implement the three methods."""

    type_name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"image_global"})
    #: Frame resizes this task type accepts and whether it may slide windows (checked at construction).
    frame_resizes: ClassVar[tuple[str, ...]] = ("square", "center_crop", "keep_aspect", "none")
    frame_slides: ClassVar[bool] = False

    def __init__(self, definition: TaskDefinition):
        self.d = definition
        frame = definition.spec.frame
        if frame.resize not in self.frame_resizes or (frame.inference == "slide" and not self.frame_slides):
            allowed = ", ".join(self.frame_resizes) + (" (whole or slide)" if self.frame_slides else " (whole image)")
            raise TipsBenchError(f"task {definition.name}: frame resize '{frame.resize}' with {frame.inference} "
                                 f"inference does not fit a {self.type_name} task; accepted: {allowed}")

    def check_backbone(self, spec: BackboneSpec) -> None:
        """Fail early, in one sentence, when the backbone lacks a capability the task needs."""
        missing = sorted(self.needs - spec.capabilities)
        if missing:
            what = {"text": "a text tower", "dense": "dense patch features", "image_global": "a global embedding"}
            raise CapabilityError(
                f"task {self.d.name} needs {', '.join(what.get(m, m) for m in missing)}, which {spec.name} "
                f"does not have; pick a backbone with it (see 'tips-bench backbones')"
            )

    @abstractmethod
    def request(self, role: str) -> FeatureRequest:
        """The features and targets to cache for a role (``train``/``eval``)."""

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Compute the metrics from cached features."""

    def resolution(self, spec: BackboneSpec) -> tuple[int, int]:
        """The square input size: the protocol's, or the backbone's native one when it says 'native'."""
        res = self.d.p("resolution", "native")
        if res == "native":
            return (spec.native_resolution, spec.native_resolution)
        if isinstance(res, int):
            return (res, res)
        return (int(res[0]), int(res[1]))

    def frame(self, spec: BackboneSpec) -> Frame:
        """The task's evaluation frame resolved for a backbone (native sizes and patch size filled in)."""
        return Frame.resolve(self.d.spec.frame, self.resolution(spec), spec.native_resolution, spec.patch_size)


TASK_TYPES: dict[str, type[Task]] = {}


def register_task_type(cls: type[Task]) -> type[Task]:
    TASK_TYPES[cls.type_name] = cls
    return cls


def make_task(definition: TaskDefinition) -> Task:
    from tips_bench import tasks as _tasks  # noqa: F401  (imports every task type module)

    if definition.type not in TASK_TYPES:
        raise TipsBenchError(f"task {definition.name} has unknown type '{definition.type}'; "
                             f"known types: {', '.join(sorted(TASK_TYPES))}")
    return TASK_TYPES[definition.type](definition)


#: Protocol keys (last dotted component) whose values must be positive numbers.
POSITIVE_KEYS = frozenset({"epochs", "batch_size", "resolution", "render_size", "k", "steps", "iters", "size",
                           "max_templates", "lr", "max_points", "temperature", "num_heads", "patience"})


def _check_override_value(task: str, key: str, old: Any, new: Any) -> None:
    """``--set`` values keep the kind of the value they replace: a number stays a number (non-negative if it was),
    a flag stays true/false; counts, sizes, epochs and learning rates stay positive."""
    def bad(why: str) -> TipsBenchError:
        return TipsBenchError(f"--set {key}={new!r} for task {task}: {why} (the task's default is {old!r})")

    leaf = key.rsplit(".", 1)[-1]
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise bad("expected true or false")
        return
    numbers = [new] if not isinstance(new, list) else new
    if isinstance(old, int | float) or (isinstance(old, list) and old and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in old)):
        if not numbers or any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
            raise bad("expected a number" if not isinstance(old, list) else "expected numbers")
        olds = old if isinstance(old, list) else [old]
        if all(o >= 0 for o in olds) and any(v < 0 for v in numbers):
            raise bad("a negative value is not allowed here")
    if leaf in POSITIVE_KEYS and isinstance(new, int | float | list) and not isinstance(new, bool) and any(
            isinstance(v, int | float) and not isinstance(v, bool) and v <= 0 for v in numbers):
        raise bad(f"'{leaf}' must be positive")
