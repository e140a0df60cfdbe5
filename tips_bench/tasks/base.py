"""Task definitions (``tasks/<name>.yaml``) and the plugin contract of task types.

A definition names its type, dataset, splits, protocol (resolution, layers, global token,
head, probe schedule, seed) and metrics, with a version that is bumped whenever the protocol
changes. A task type (one module per type in this package) turns it into datasets, a feature
request for the cache, and metrics computed from cached features only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tips_bench.backbones.spec import BackboneSpec
from tips_bench.cache import CacheEntry
from tips_bench.errors import CapabilityError, TipsBenchError
from tips_bench.registry import get_definition, load_definitions


@dataclass(frozen=True)
class SplitSpec:
    """One role of a task (``train`` or ``eval``): dataset split and, for synthetic data, its size."""

    split: str
    size: int | None = None


@dataclass(frozen=True)
class TaskDefinition:
    """The typed form of ``tasks/<name>.yaml``."""

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
    references: tuple[str, ...] = ()
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskDefinition:
        try:
            ds = data["dataset"]
            splits = {role: SplitSpec(str(s["split"]), s.get("size")) for role, s in ds["splits"].items()}
            metrics = tuple(data["metrics"])
            lower = set(data.get("lower_is_better", []))
            return cls(
                name=data["name"], version=int(data["version"]), type=data["type"],
                description=data.get("description", ""), dataset=ds["name"], splits=splits,
                dataset_options=dict(ds.get("options", {}) or {}), protocol=dict(data.get("protocol", {}) or {}),
                metrics=metrics, headline=data.get("headline", metrics[0]),
                higher_is_better={m: m not in lower for m in metrics},
                references=tuple(data.get("references", []) or []), path=data.get("_path", ""), raw=data,
            )
        except (KeyError, TypeError) as exc:
            raise TipsBenchError(f"task definition {data.get('_path', data.get('name'))} lacks field {exc}; "
                                 "see docs/tasks.md for the schema") from exc

    def p(self, key: str, default: Any = None) -> Any:
        """A protocol value."""
        return self.protocol.get(key, default)


def get_task_definition(name: str) -> TaskDefinition:
    return TaskDefinition.from_dict(get_definition("tasks", name))


def all_task_definitions() -> list[TaskDefinition]:
    return [TaskDefinition.from_dict(d) for _, d in sorted(load_definitions("tasks").items())]


@dataclass(frozen=True)
class FeatureRequest:
    """What the cache must hold for one split: feature arrays and ground-truth targets."""

    layers: str | tuple[int, ...] = "last"   # 'last', 'last4', 'dense' or explicit block indices
    globals: bool = True
    text_dense: bool = False
    targets: tuple[str, ...] = ()            # sample keys stored next to the features
    pair: bool = False                       # samples are image pairs (correspondence)
    max_points: int = 64                     # pairs: keypoints padded (invalid) or cut to this count


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
    timings: dict[str, float] = field(default_factory=dict)

    def batches(self, role: str, names: list[str], batch_size: int | None = None, seed: int | None = None
                ) -> Iterator[dict[str, np.ndarray]]:
        return self.entries[role].iter_batches(names, batch_size or self.batch_size, seed=seed)


class Task(ABC):
    """A task type. Subclasses set ``type_name`` and ``needs`` and implement the three methods."""

    type_name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"image_global"})

    def __init__(self, definition: TaskDefinition):
        self.d = definition

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
        """Input resolution: the protocol's, or the backbone's native one when it says 'native'."""
        res = self.d.p("resolution", "native")
        if res == "native":
            return (spec.native_resolution, spec.native_resolution)
        if isinstance(res, int):
            return (res, res)
        return (int(res[0]), int(res[1]))


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
