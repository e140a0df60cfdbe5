"""Comparison tables (ours beside the papers' numbers), plots and an atomic leaderboard export, on pandas."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from tips_bench.errors import TipsBenchError
from tips_bench.results import ResultRow, latest_frame, rows_frame

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


# ---------------------------------------------------------------- aggregation (pandas)

AGG_KEY = ["backbone", "task", "task_version", "metric"]
_MODE_LABEL = re.compile(r" \((cached|faithful)\)$")
_NEWEST_COLUMNS = [
    "backbone_family", "dataset", "split", "higher_is_better", "protocol", "packages", "device", "wall_time_s",
    "images_per_s", "peak_memory_mb", "num_samples", "limit", "run_id", "timestamp", "time",
]
_DISTINCT_COLUMNS = ["code_version", "config_hash", "checkpoint_hash", "protocol_mode", "protocol_frame"]
Rows = Iterable[ResultRow] | pd.DataFrame


def as_frame(data: Rows) -> pd.DataFrame:
    """A results DataFrame (``rows_frame``) from rows, or the frame itself."""
    return data if isinstance(data, pd.DataFrame) else rows_frame(data)


def aggregate_frame(data: Rows) -> pd.DataFrame:
    """One row per (backbone, task, task_version, metric) over the latest row of each seed, sorted by those keys.

    Columns: the keys, ``mean``, ``std`` (sample std over seeds, NaN below 2 seeds), ``n_seeds``, ``seeds``
    ('0;1;2'), the provenance of the newest row (``_NEWEST_COLUMNS``) and, joined with ';' where seeds differ,
    ``code_version``, ``config_hash``, ``checkpoint_hash``, ``protocol_mode`` and ``protocol_frame``.
    """
    frame = latest_frame(as_frame(data))
    columns = [*AGG_KEY, "mean", "std", "n_seeds", "seeds", *_DISTINCT_COLUMNS, *_NEWEST_COLUMNS]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.sort_values([*AGG_KEY, "seed"], kind="stable").reset_index(drop=True)
    groups = frame.groupby(AGG_KEY, sort=True)
    out = pd.DataFrame({
        "mean": groups["value"].agg(lambda s: s.mean(skipna=False)),
        "std": groups["value"].agg(lambda s: s.std(ddof=1, skipna=False) if len(s) > 1 else float("nan")),
        "n_seeds": groups["value"].size(),
        "seeds": groups["seed"].agg(lambda s: ";".join(str(x) for x in s)),
    })
    for column in _DISTINCT_COLUMNS:
        out[column] = groups[column].agg(lambda s: ";".join(dict.fromkeys(str(x) for x in s)))
    newest = frame.loc[groups["time"].idxmax().to_numpy(), _NEWEST_COLUMNS].set_axis(out.index)
    return pd.concat([out, newest], axis=1).reset_index()[columns]


def newest_versions(agg: pd.DataFrame) -> pd.DataFrame:
    """Keep only the highest task_version per (backbone, task, metric)."""
    if agg.empty:
        return agg
    top = agg.groupby(["backbone", "task", "metric"])["task_version"].transform("max")
    return agg[agg["task_version"] == top]


def comparison_frame(data: Rows, paper: Iterable[dict[str, Any]] | None = None,
                     metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Long form of the comparison: one row per (backbone, task/metric) of the newest task version.

    Adds ``column`` ('task/metric'), ``paper``, ``paper_model``, ``paper_source``, ``delta`` (ours − paper) and
    ``better`` (True/False/None: better than the paper in the metric's direction). ``metrics`` selects and
    orders columns as in `comparison_table`.
    """
    agg = newest_versions(aggregate_frame(data)).copy()
    agg["column"] = agg["task"] + "/" + agg["metric"]
    columns = _select_columns(sorted(set(agg["column"])), metrics)
    agg = agg[agg["column"].isin(columns)].copy()
    agg["column"] = pd.Categorical(agg["column"], categories=columns, ordered=True)
    agg = agg.sort_values(["column", "backbone"]).reset_index(drop=True)
    lookup = paper_lookup(paper)
    # '<task> (cached)' / '<task> (faithful)' rows compare with the paper's number of <task>, mode shown
    refs = [lookup.get((b, _MODE_LABEL.sub("", t), m))
            for b, t, m in zip(agg["backbone"], agg["task"], agg["metric"], strict=True)]
    agg["paper"] = [float(r["value"]) if r else float("nan") for r in refs]
    agg["paper_model"] = [r["paper_model"] if r else "" for r in refs]
    agg["paper_source"] = [r["source"] if r else "" for r in refs]
    agg["delta"] = agg["mean"] - agg["paper"]
    agg["column"] = agg["column"].astype(str)
    return agg


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
            out += f" (paper {self.paper:.{d}f}, Δ {signed(self.delta, d)})"
        return out


def signed(x: float, decimals: int) -> str:
    """'+1.2' / '-0.3'; a value that rounds to zero is '+0.0'."""
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
    rows: Rows,
    paper: Iterable[dict[str, Any]] | None = None,
    metrics: Sequence[str] | None = None,
) -> Table:
    """Mean (± std over seeds) of the latest rows per backbone and task/metric, beside the paper's numbers.

    `metrics` selects and orders columns: 'task/metric' keys, or bare metric names matching every task.
    Only the newest task_version of each (backbone, task, metric) is shown.
    """
    long = comparison_frame(rows, paper, metrics)
    columns = list(dict.fromkeys(long["column"]))
    backbones = sorted(set(long["backbone"]))
    by_key = {(r.backbone, r.column): _cell(r) for r in long.itertuples(index=False)}
    cells = [[by_key.get((b, col)) for col in columns] for b in backbones]
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


def _cell(r: Any) -> Cell:
    return Cell(mean=float(r.mean), std=None if pd.isna(r.std) else float(r.std), n_seeds=int(r.n_seeds),
                higher_is_better=bool(r.higher_is_better), paper=None if pd.isna(r.paper) else float(r.paper))


def decimals_for(values: Iterable[float]) -> int:
    """3 decimals for small-valued columns (depth RMSE in metres), else 1 (percentages, degrees)."""
    vals = [abs(v) for v in values if v == v]
    return 3 if vals and max(vals) < 2 else 1


def _align_decimals(cells: list[list[Cell | None]]) -> None:
    """Use one number of decimals per column, chosen from all ours and paper values in it."""
    for col in zip(*cells, strict=True) if cells else ():
        present = [c for c in col if c is not None]
        values = [c.mean for c in present] + [c.paper for c in present if c.paper is not None]
        for c in present:
            c.decimals = decimals_for(values)


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
    rows: Rows,
    out_dir: str | os.PathLike[str],
    paper: Iterable[dict[str, Any]] | None = None,
) -> list[Path]:
    """One PNG bar chart per task/metric (<task>__<metric>.png); paper numbers drawn as markers.

    `paper` defaults to the bundled paper reference (if present); pass [] for no markers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long = comparison_frame(rows, _default_paper(paper))
    paths = []
    for (task, metric), group in long.groupby(["task", "metric"], sort=True):
        path = out / f"{safe_filename(task)}__{safe_filename(metric)}.png"
        _atomic_write(path, lambda f, g=group, t=task, m=metric: bar_chart(g, t, m).savefig(f, format="png", dpi=100))
        paths.append(path)
    return paths


def bar_chart(group: pd.DataFrame, task: str, metric: str, ax: Any = None) -> Any:
    """Bars of our mean ± std per backbone, paper values as red diamonds; a new Figure unless ``ax`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    group = group.sort_values("backbone")
    xs = list(range(len(group)))
    fig = None
    if ax is None:
        fig = Figure(figsize=(max(4.0, 0.9 * len(group) + 2), 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    ax.bar(xs, group["mean"], yerr=group["std"].fillna(0.0), capsize=3, label="ours")
    refs = [(x, v) for x, v in zip(xs, group["paper"], strict=True) if not pd.isna(v)]
    if refs:
        ax.scatter([x for x, _ in refs], [v for _, v in refs], marker="D", color="tab:red", zorder=3, label="paper")
    ax.set_xticks(xs, list(group["backbone"]), rotation=30, ha="right")
    arrow = "↑" if bool(group["higher_is_better"].iloc[0]) else "↓"
    ax.set_title(f"{task} / {metric} ({arrow})")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize="small")
    return fig if fig is not None else ax.figure


def _default_paper(paper: Iterable[dict[str, Any]] | None) -> Iterable[dict[str, Any]]:
    if paper is not None:
        return paper
    path = default_paper_reference_path()
    return load_paper_reference(path) if path.is_file() else []


# ---------------------------------------------------------------- leaderboard

LEADERBOARD_COLUMNS = (
    "backbone", "backbone_family", "task", "task_version", "dataset", "split", "metric", "higher_is_better",
    "mean", "std", "n_seeds", "seeds", "paper_value", "paper_delta", "paper_model", "paper_source",
    "code_version", "config_hash", "checkpoint_hash", "protocol", "protocol_mode", "protocol_frame", "packages",
    "device", "wall_time_s", "images_per_s", "peak_memory_mb", "num_samples", "limit", "run_id", "timestamp",
)
EXPORT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def leaderboard_frame(rows: Rows, paper: Iterable[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per (backbone, task, task_version, metric): stats, paper value and Δ, provenance of the newest row.

    Hashes and code versions that differ across seeds are joined with ';'; ``protocol`` and ``packages`` are
    JSON text. `paper` defaults to the bundled reference.
    """
    agg = aggregate_frame(rows)
    lookup = paper_lookup(_default_paper(paper))
    refs = [lookup.get((b, t, m)) for b, t, m in zip(agg["backbone"], agg["task"], agg["metric"], strict=True)]
    board = agg.assign(
        paper_value=[float(r["value"]) if r else float("nan") for r in refs],
        paper_model=[r["paper_model"] if r else "" for r in refs],
        paper_source=[r["source"] if r else "" for r in refs],
        protocol=[json.dumps(p, sort_keys=True) for p in agg["protocol"]],
        packages=[json.dumps(p, sort_keys=True) for p in agg["packages"]],
    )
    board["paper_delta"] = board["mean"] - board["paper_value"]
    board = board[list(LEADERBOARD_COLUMNS)].reset_index(drop=True)
    for column in ("task_version", "n_seeds"):
        board[column] = board[column].astype("int64")
    board["limit"] = board["limit"].astype("Int64")
    board["higher_is_better"] = board["higher_is_better"].astype(bool)
    for column in ("mean", "std", "paper_value", "paper_delta", "wall_time_s", "images_per_s", "peak_memory_mb"):
        board[column] = board[column].astype("float64")
    return board


def export_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """'csv' or 'parquet': ``fmt`` when given, else from the file suffix."""
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise TipsBenchError(f"export format '{fmt}' is not csv or parquet")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise TipsBenchError(f"cannot tell the export format of {path} from its suffix; name it .csv or .parquet, "
                             f"or use --csv / --parquet")
    return EXPORT_FORMATS[suffix]


def export_leaderboard(
    rows: Rows,
    path: str | os.PathLike[str],
    paper: Iterable[dict[str, Any]] | None = None,
    fmt: str | None = None,
) -> Path:
    """Write the leaderboard (`leaderboard_frame`) as CSV or Parquet: ``fmt`` when given, else from the suffix
    (.csv, .parquet, .pq). The file is replaced atomically; nothing is written on any error."""
    kind = export_format(path, fmt)
    board = leaderboard_frame(rows, paper)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        _require_parquet()
        _atomic_write(path, lambda f: board.to_parquet(f, index=False))
    else:
        _atomic_write(path, lambda f: _write_csv(f, board))
    return path


def _write_csv(f: IO[bytes], board: pd.DataFrame) -> None:
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    board.to_csv(text, index=False, lineterminator="\n")
    text.flush()
    text.detach()


def _require_parquet() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise TipsBenchError("writing Parquet needs pyarrow; pip install pyarrow, or export --csv") from None


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
    "Cell", "Table", "aggregate_frame", "as_frame", "bar_chart", "comparison_frame", "comparison_table",
    "default_paper_reference_path", "export_format", "export_leaderboard", "leaderboard_frame",
    "load_paper_reference", "newest_versions", "paper_lookup", "plot", "render_csv", "render_markdown",
    "render_rich", "safe_filename", "signed",
]
