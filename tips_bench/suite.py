"""The built-in synthetic suite and the score-regression gate.

Default suite: every ``toy_*`` task on the no-download baselines (``pixels`` and a randomly
initialised ``tips_s14``) and the five shipped mini TIPS backbones (``mini_*``, pretrained on the
synthetic world with the paper's recipes, see ``tips-bench pretrain``). The regression baseline
(``results/ci_baseline.csv``) stores, per
(backbone, task, metric), the mean and standard deviation over several probe seeds and the
tolerance band derived from them: ``mean ± max(k · std, floor)`` with ``k`` and the absolute
``floor`` recorded in each row.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tips_bench.atomic import atomic_path
from tips_bench.errors import TipsBenchError
from tips_bench.results import ResultRow
from tips_bench.runner import Runner, RunOptions, run_grid
from tips_bench.tasks.base import all_task_definitions

if TYPE_CHECKING:
    import pandas as pd

MINI_BACKBONES = ("mini_clip_noisy", "mini_clip_synthetic", "mini_tips_dual", "mini_tips_full", "mini_cap_mim")
DEFAULT_BACKBONES: tuple[tuple[str, bool], ...] = (("pixels", False), ("tips_s14", True),
                                                   *((name, False) for name in MINI_BACKBONES))
BAND_K = 4.0
BASELINE_FIELDS = ("backbone", "random_init", "task", "task_version", "metric", "higher_is_better", "mean", "std",
                   "n_seeds", "band_k", "band_floor", "low", "high")


def suite_tasks(suite: str = "toy") -> list[str]:
    """Tasks whose definition lists ``suite: <suite>`` ('toy' = the default of ``tips-bench run``)."""
    names = [d.name for d in all_task_definitions() if d.suite == suite]
    if not names:
        raise TipsBenchError(f"no task belongs to suite '{suite}'; suites are set by 'suite:' in tasks/*.yaml")
    return names


def toy_tasks() -> list[str]:
    return suite_tasks("toy")


def parse_backbone(text: str, random_init: bool) -> tuple[str, bool]:
    """'tips_s14+random' or 'tips_s14' (with the global --random-init flag)."""
    if text.endswith("+random"):
        return text[: -len("+random")], True
    return text, random_init


def _floor(metric: str, mean: float) -> float:
    """Smallest band half-width: 1.0 point for percentages, 2 % of the value for errors."""
    return 1.0 if abs(mean) > 1.5 or metric.startswith(("top", "mIoU", "aAcc", "mAcc", "recall", "pck", "d1", "pct",
                                                         "i2t", "t2i", "R@")) else max(0.02 * abs(mean), 1e-3)


@dataclass(frozen=True)
class Band:
    backbone: str
    random_init: bool
    task: str
    task_version: int
    metric: str
    higher_is_better: bool
    mean: float
    std: float
    n_seeds: int
    band_k: float
    band_floor: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def bands_from_rows(rows: Sequence[ResultRow], k: float = BAND_K) -> list[Band]:
    """Tolerance bands from rows of several seeds of the same cells."""
    groups: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in rows:
        groups[(r.backbone, r.task, r.task_version, r.metric)].append(r)
    bands = []
    for (backbone, task, version, metric), rs in sorted(groups.items()):
        values = [r.value for r in rs if not math.isnan(r.value)]
        if not values:
            continue
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        floor = _floor(metric, mean)
        half = max(k * std, floor)
        name, random_init = parse_backbone(backbone, False)
        bands.append(Band(name, random_init, task, version, metric, rs[0].higher_is_better, mean, std, len(values),
                          k, floor, mean - half, mean + half))
    return bands


def write_baseline(bands: Sequence[Band], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=BASELINE_FIELDS)
        writer.writeheader()
        for b in bands:
            writer.writerow({f: getattr(b, f) for f in BASELINE_FIELDS})


def read_baseline(path: str | Path) -> list[Band]:
    """The bands of a baseline CSV (read with pandas); one-sentence errors for a missing or malformed file."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        raise TipsBenchError(f"baseline {p} is a folder; pass the baseline CSV file (e.g. results/ci_baseline.csv)")
    if not p.is_file():
        raise TipsBenchError(f"baseline {p} does not exist; create it with 'tips-bench regress --update {p}'")
    try:
        frame = pd.read_csv(p, dtype={"backbone": str, "task": str, "metric": str, "random_init": str,
                                      "higher_is_better": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TipsBenchError(f"baseline {p} is not a readable CSV ({str(exc).strip()}); regenerate it with "
                             f"--update") from None
    missing = set(BASELINE_FIELDS) - set(frame.columns)
    if missing:
        raise TipsBenchError(f"baseline {p} lacks columns {sorted(missing)}; regenerate it with --update")
    try:
        bands = [Band(r.backbone, r.random_init == "True", r.task, int(r.task_version), r.metric,
                      r.higher_is_better == "True", float(r.mean), float(r.std), int(r.n_seeds), float(r.band_k),
                      float(r.band_floor), float(r.low), float(r.high))
                 for r in frame[list(BASELINE_FIELDS)].itertuples(index=False)]
    except (TypeError, ValueError) as exc:
        raise TipsBenchError(f"baseline {p} has a malformed value ({exc}); regenerate it with --update") from None
    if not bands:
        raise TipsBenchError(f"baseline {p} holds no bands (only a header), so it would check nothing; regenerate it "
                             f"with 'tips-bench regress --update {p}'")
    for i, b in enumerate(bands, start=2):
        if any(not isinstance(v, str) or not v or v == "nan" for v in (b.backbone, b.task, b.metric)):
            raise TipsBenchError(f"baseline {p} line {i} lacks a backbone, task or metric; regenerate it with --update")
        if not all(math.isfinite(v) for v in (b.mean, b.low, b.high)) or b.low > b.high:
            raise TipsBenchError(f"baseline {p} line {i} has a malformed band [{b.low}, {b.high}] for {b.backbone} on "
                                 f"{b.task}/{b.metric} (it must be finite, low <= high); regenerate it with --update")
    return bands


@dataclass(frozen=True)
class Check:
    band: Band
    value: float | None

    @property
    def ok(self) -> bool:
        return self.value is not None and self.band.contains(self.value)


def check_against(bands: Sequence[Band], rows: Sequence[ResultRow] | pd.DataFrame) -> list[Check]:
    """Compare fresh rows (or their DataFrame) with the baseline bands (a missing value or a version change fails)."""
    from tips_bench.results import rows_frame

    frame = rows if not isinstance(rows, Sequence) else rows_frame(rows)
    by_key = {}
    for r in frame[["backbone", "task", "task_version", "metric", "value"]].itertuples(index=False):
        by_key[(*parse_backbone(r.backbone, False), r.task, int(r.task_version), r.metric)] = float(r.value)
    return [Check(b, by_key.get((b.backbone, b.random_init, b.task, b.task_version, b.metric))) for b in bands]


def included_bands(path: str | Path, tasks: Sequence[str]) -> list[Band]:
    """The bands of ``path`` for the given tasks (``regress --update --include``): its backbones are not re-run."""
    bands = [b for b in read_baseline(path) if b.task in set(tasks)]
    if not bands:
        raise TipsBenchError(f"{path} has no band for the tasks {', '.join(tasks)}; run benchmarks/mini_study.py to "
                             "write it, or leave out --include")
    return bands


def run_for_baseline(bands: Sequence[Band], seeds: Sequence[int], opts: RunOptions, runner: Runner) -> list[ResultRow]:
    """Run exactly the (backbone, task) cells a baseline covers."""
    cells = sorted({(b.backbone, b.random_init, b.task) for b in bands})
    rows: list[ResultRow] = []
    for backbone, random_init, task in cells:
        rows += run_grid([(backbone, random_init)], [task], seeds, opts, runner)
    return rows
