"""Whether a task will find exactly the data it reads: its splits, with its dataset options, and its sample keys.

``tips-bench data check`` uses this so that "ok" means the run will find its data: a layout the dataset loader
accepts can still lack what a task pins (NYU's official .mat file where ``nyu_depth`` reads the BTS layout, VOC
without SBD where ``voc_seg`` trains on ``trainaug``).
"""

from __future__ import annotations

from pathlib import Path

from tips_bench.data.catalog import SYNTHETIC, open_dataset
from tips_bench.errors import TipsBenchError
from tips_bench.tasks.base import TaskDefinition, all_task_definitions, make_task

#: Sample keys every single-image task reads besides its targets.
IMAGE_KEYS = ("image",)
PAIR_KEYS = ("image_a", "image_b", "points_a", "points_b", "points_valid", "bbox_b")


def task_problems(definition: TaskDefinition, root: str | Path | None) -> list[str]:
    """One sentence per problem that would stop the task (empty: every split opens and its samples have the keys)."""
    if definition.dataset in SYNTHETIC:
        return []
    task = make_task(definition)
    problems = []
    for role, split in definition.splits.items():
        try:
            ds = open_dataset(definition.dataset, split.split, root=root, options=definition.dataset_options)
            if len(ds) == 0:
                problems.append(f"{role} split '{split.split}' is empty")
                continue
            request = task.request(role)
            keys = PAIR_KEYS if request.pair else (*IMAGE_KEYS, *request.targets)
            if definition.type == "retrieval":
                keys = (*keys, "captions")
            for index in sorted({0, len(ds) - 1}):
                missing = [k for k in keys if k not in ds[index]]
                if missing:
                    problems.append(f"{role} split '{split.split}' item {index} lacks {', '.join(missing)}")
                    break
        except TipsBenchError as exc:
            problems.append(f"{role} split '{split.split}': {exc}")
    return problems


def tasks_reading(dataset: str) -> list[TaskDefinition]:
    """Every task definition that reads a dataset."""
    return [d for d in all_task_definitions() if d.dataset == dataset]
