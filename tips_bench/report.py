"""Comparison tables (ours beside the papers' numbers), plots and an atomic leaderboard export."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tips_bench.results import ResultRow, latest, parse_timestamp

if TYPE_CHECKING:
    import rich.table

PAPER_COLUMNS = ("backbone", "paper_model", "task", "metric", "value", "higher_is_better", "source", "note")
_THIRD_PARTY = "third-party"

# ---------------------------------------------------------------- paper reference


def default_paper_reference_path() -> Path:
    """The packaged CSV in an installed wheel, else results/paper_reference.csv of the source checkout."""
    packaged = importlib.resources.files("tips_bench") / "_defs/results/paper_reference.csv"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / "results" / "paper_reference.csv"


def load_paper_reference(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Rows of the papers' published numbers: value as float, higher_is_better as bool, other columns str."""
    path = Path(path) if path is not None else default_paper_reference_path()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(PAPER_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        return [_parse_paper_row(row) for row in reader]


def _parse_paper_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: (row.get(k) or "").strip() for k in PAPER_COLUMNS}
    out["value"] = float(out["value"])
    out["higher_is_better"] = out["higher_is_better"].lower() == "true"
    return out


def paper_lookup(paper: Iterable[dict[str, Any]] | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Map (backbone, task, metric) to one paper row; the authors' sources win over third-party notes."""
    ranked = sorted(
        (r for r in (paper or ()) if r.get("backbone")),
        key=lambda r: _THIRD_PARTY in str(r.get("source", "")),
    )
    lookup: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in ranked:
        lookup.setdefault((row["backbone"], row["task"], row["metric"]), row)
    return lookup


# ---------------------------------------------------------------- aggregation


@dataclass
class Aggregate:
    """Our result for one (backbone, task, task_version, metric) over seeds (latest row per seed)."""

    backbone: str
    task: str
    task_version: int
    metric: str
    rows: list[ResultRow]

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.rows]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds; None with fewer than 2 seeds."""
        return statistics.stdev(self.values) if len(self.rows) >= 2 else None

    @property
    def newest(self) -> ResultRow:
        return max(self.rows, key=lambda r: parse_timestamp(r.timestamp))

    @property
    def higher_is_better(self) -> bool:
        return self.newest.higher_is_better


def aggregate(rows: Iterable[ResultRow]) -> list[Aggregate]:
    """Latest row per seed, grouped by (backbone, task, task_version, metric), sorted by those keys."""
    groups: dict[tuple[str, str, int, str], list[ResultRow]] = {}
    for row in latest(rows):
        groups.setdefault((row.backbone, row.task, row.task_version, row.metric), []).append(row)
    return [Aggregate(*key, rows=sorted(g, key=lambda r: r.seed)) for key, g in sorted(groups.items())]


def _newest_versions(aggs: list[Aggregate]) -> list[Aggregate]:
    """Keep only the highest task_version per (backbone, task, metric)."""
    top: dict[tuple[str, str, str], Aggregate] = {}
    for agg in aggs:
        key = (agg.backbone, agg.task, agg.metric)
        if key not in top or agg.task_version > top[key].task_version:
            top[key] = agg
    return list(top.values())


# ---------------------------------------------------------------- comparison table


@dataclass
class Cell:
    """One table cell: our mean (± std) and, when known, the paper value and our difference to it."""

    mean: float
    std: float | None
    n_seeds: int
    higher_is_better: bool
    paper: float | None = None
    decimals: int = 1

    @property
    def delta(self) -> float | None:
        return None if self.paper is None else self.mean - self.paper

    @property
    def better_than_paper(self) -> bool | None:
        if self.delta is None or round(self.delta, self.decimals) == 0:
            return None
        return (self.delta > 0) == self.higher_is_better

    @property
    def text(self) -> str:
        d = self.decimals
        out = f"{self.mean:.{d}f}" + (f" ± {self.std:.{d}f}" if self.std is not None else "")
        if self.paper is not None and self.delta is not None:
            out += f" (paper {self.paper:.{d}f}, Δ {_signed(self.delta, d)})"
        return out


def _signed(x: float, decimals: int) -> str:
    text = f"{x:+.{decimals}f}"
    return "+" + text[1:] if text.startswith("-") and float(text) == 0 else text


@dataclass
class Table:
    """A comparison table: backbones as rows, 'task/metric' as columns; None where there is no result."""

    columns: list[str]
    rows: list[str]
    cells: list[list[Cell | None]]
    title: str = ""
    corner: str = "backbone"
    column_higher_is_better: list[bool] = field(default_factory=list)

    def text_grid(self) -> list[list[str]]:
        """Cells as strings ('' where empty)."""
        return [[c.text if c else "" for c in line] for line in self.cells]


def comparison_table(
    rows: Iterable[ResultRow],
    paper: Iterable[dict[str, Any]] | None = None,
    metrics: Sequence[str] | None = None,
) -> Table:
    """Mean (± std over seeds) of the latest rows per backbone and task/metric, beside the paper's numbers.

    `metrics` selects and orders columns: 'task/metric' keys, or bare metric names matching every task.
    Only the newest task_version of each (backbone, task, metric) is shown.
    """
    aggs = _newest_versions(aggregate(rows))
    by_key = {(a.backbone, f"{a.task}/{a.metric}"): a for a in aggs}
    columns = _select_columns(sorted({k[1] for k in by_key}), metrics)
    backbones = sorted({a.backbone for a in aggs if f"{a.task}/{a.metric}" in columns})
    lookup = paper_lookup(paper)
    cells = [[_cell(by_key.get((b, col)), lookup) for col in columns] for b in backbones]
    _align_decimals(cells)
    hib = [next((line[j].higher_is_better for line in cells if line[j]), True) for j in range(len(columns))]
    return Table(columns=columns, rows=backbones, cells=cells, column_higher_is_better=hib)


def _select_columns(available: list[str], metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return available
    chosen: list[str] = []
    for want in metrics:
        for col in available:
            if (col == want or col.split("/", 1)[1] == want) and col not in chosen:
                chosen.append(col)
    return chosen


def _cell(agg: Aggregate | None, lookup: dict[tuple[str, str, str], dict[str, Any]]) -> Cell | None:
    if agg is None:
        return None
    ref = lookup.get((agg.backbone, agg.task, agg.metric))
    return Cell(
        mean=agg.mean, std=agg.std, n_seeds=len(agg.rows), higher_is_better=agg.higher_is_better,
        paper=None if ref is None else float(ref["value"]),
    )


def _decimals_for(values: Iterable[float]) -> int:
    """3 decimals for small-valued columns (depth RMSE in metres), else 1 (percentages, degrees)."""
    vals = [abs(v) for v in values]
    return 3 if vals and max(vals) < 2 else 1


def _align_decimals(cells: list[list[Cell | None]]) -> None:
    """Use one number of decimals per column, chosen from all ours and paper values in it."""
    for col in zip(*cells, strict=True) if cells else ():
        present = [c for c in col if c is not None]
        values = [c.mean for c in present] + [c.paper for c in present if c.paper is not None]
        for c in present:
            c.decimals = _decimals_for(values)


# ---------------------------------------------------------------- renderers


def render_rich(table: Table) -> rich.table.Table:
    """A rich Table; cells better than the paper in green, worse in red."""
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(title=table.title or None, show_lines=False)
    out.add_column(table.corner, style="bold")
    hib_list = table.column_higher_is_better or [True] * len(table.columns)
    for name, hib in zip(table.columns, hib_list, strict=True):
        out.add_column(f"{name} {'↑' if hib else '↓'}", justify="right")
    for name, line in zip(table.rows, table.cells, strict=True):
        out.add_row(name, *(_rich_cell(c, Text) for c in line))
    return out


def _rich_cell(cell: Cell | None, text_cls: Any) -> Any:
    if cell is None:
        return text_cls("–", style="dim")
    style = {True: "green", False: "red"}.get(cell.better_than_paper, "")
    return text_cls(cell.text, style=style)


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table ('|' in cells escaped)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line([table.corner, *table.columns]), line(["---"] * (len(table.columns) + 1))]
    out += [line([name, *texts]) for name, texts in zip(table.rows, table.text_grid(), strict=True)]
    title = [f"**{table.title}**", ""] if table.title else []
    return "\n".join(title + out) + "\n"


def render_csv(table: Table) -> str:
    """CSV text: a header row, then one row per backbone with the cell strings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.corner, *table.columns])
    for name, texts in zip(table.rows, table.text_grid(), strict=True):
        writer.writerow([name, *texts])
    return buf.getvalue()


# ---------------------------------------------------------------- plots


def safe_filename(text: str) -> str:
    """Replace anything but letters, digits, '.', '_' and '-' by '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "plot"


def plot(
    rows: Iterable[ResultRow],
    out_dir: str | os.PathLike[str],
    paper: Iterable[dict[str, Any]] | None = None,
) -> list[Path]:
    """One PNG bar chart per task/metric (<task>__<metric>.png); paper numbers drawn as markers.

    `paper` defaults to the bundled paper reference (if present); pass [] for no markers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lookup = paper_lookup(_default_paper(paper))
    aggs = _newest_versions(aggregate(rows))
    by_col: dict[tuple[str, str], list[Aggregate]] = {}
    for agg in aggs:
        by_col.setdefault((agg.task, agg.metric), []).append(agg)
    paths = []
    for (task, metric), group in sorted(by_col.items()):
        path = out / f"{safe_filename(task)}__{safe_filename(metric)}.png"
        _atomic_write(path, lambda f, g=group, t=task, m=metric: _draw_bars(f, t, m, g, lookup))
        paths.append(path)
    return paths


def _draw_bars(
    f: IO[bytes], task: str, metric: str, group: list[Aggregate], lookup: dict[tuple[str, str, str], dict]
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    group = sorted(group, key=lambda a: a.backbone)
    xs = list(range(len(group)))
    fig = Figure(figsize=(max(4.0, 0.9 * len(group) + 2), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(xs, [a.mean for a in group], yerr=[a.std or 0.0 for a in group], capsize=3, label="ours")
    refs = [(x, lookup.get((a.backbone, task, metric))) for x, a in zip(xs, group, strict=True)]
    refs = [(x, r["value"]) for x, r in refs if r is not None]
    if refs:
        xs_ref, ys_ref = [x for x, _ in refs], [v for _, v in refs]
        ax.scatter(xs_ref, ys_ref, marker="D", color="tab:red", zorder=3, label="paper")
    ax.set_xticks(xs, [a.backbone for a in group], rotation=30, ha="right")
    arrow = "↑" if group[0].higher_is_better else "↓"
    ax.set_title(f"{task} / {metric} ({arrow})")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(f, format="png", dpi=100)


def _default_paper(paper: Iterable[dict[str, Any]] | None) -> Iterable[dict[str, Any]]:
    if paper is not None:
        return paper
    path = default_paper_reference_path()
    return load_paper_reference(path) if path.is_file() else []


# ---------------------------------------------------------------- leaderboard

LEADERBOARD_COLUMNS = (
    "backbone", "backbone_family", "task", "task_version", "dataset", "split", "metric", "higher_is_better",
    "mean", "std", "n_seeds", "seeds", "paper_value", "paper_delta", "paper_model", "paper_source",
    "code_version", "config_hash", "checkpoint_hash", "protocol", "packages", "device",
    "wall_time_s", "images_per_s", "peak_memory_mb", "num_samples", "limit", "run_id", "timestamp",
)


def export_leaderboard(
    rows: Iterable[ResultRow],
    path: str | os.PathLike[str],
    paper: Iterable[dict[str, Any]] | None = None,
) -> Path:
    """Write one CSV line per (backbone, task, task_version, metric) with stats, provenance and paper Δ.

    Provenance comes from the newest row; hashes and code versions that differ across seeds are joined
    with ';'. `paper` defaults to the bundled reference. The file is replaced atomically.
    """
    lookup = paper_lookup(_default_paper(paper))
    records = [_leaderboard_record(agg, lookup) for agg in aggregate(rows)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: _write_csv(f, records))
    return path


def _write_csv(f: IO[bytes], records: list[dict[str, Any]]) -> None:
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    writer = csv.DictWriter(text, fieldnames=LEADERBOARD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record)
    text.flush()
    text.detach()


def _leaderboard_record(agg: Aggregate, lookup: dict[tuple[str, str, str], dict]) -> dict[str, Any]:
    new = agg.newest
    ref = lookup.get((agg.backbone, agg.task, agg.metric))

    def distinct(name: str) -> str:
        return ";".join(dict.fromkeys(getattr(r, name) for r in agg.rows))

    return {
        "backbone": agg.backbone, "backbone_family": new.backbone_family, "task": agg.task,
        "task_version": agg.task_version, "dataset": new.dataset, "split": new.split, "metric": agg.metric,
        "higher_is_better": new.higher_is_better, "mean": repr(agg.mean),
        "std": "" if agg.std is None else repr(agg.std), "n_seeds": len(agg.rows),
        "seeds": ";".join(str(r.seed) for r in agg.rows),
        "paper_value": "" if ref is None else ref["value"],
        "paper_delta": "" if ref is None else repr(agg.mean - float(ref["value"])),
        "paper_model": "" if ref is None else ref["paper_model"],
        "paper_source": "" if ref is None else ref["source"],
        "code_version": distinct("code_version"), "config_hash": distinct("config_hash"),
        "checkpoint_hash": distinct("checkpoint_hash"),
        "protocol": json.dumps(new.protocol, sort_keys=True),
        "packages": json.dumps(new.packages, sort_keys=True),
        "device": new.device, "wall_time_s": new.wall_time_s, "images_per_s": new.images_per_s,
        "peak_memory_mb": new.peak_memory_mb, "num_samples": new.num_samples,
        "limit": "" if new.limit is None else new.limit, "run_id": new.run_id, "timestamp": new.timestamp,
    }


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via a temp file in the same directory, fsync, then os.replace; no partial file on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "Aggregate", "Cell", "Table", "aggregate", "comparison_table", "default_paper_reference_path",
    "export_leaderboard", "load_paper_reference", "paper_lookup", "plot", "render_csv", "render_markdown",
    "render_rich", "safe_filename",
]
