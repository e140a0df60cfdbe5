"""``tips-bench report --html DIR``: one self-contained page (inline CSS, SVG charts, PNG data URIs; no network).

Sections: the comparison table (ours, seeds, paper, Δ, protocol mode and frame), a chart per task,
and for the dense tasks a panel per backbone with a few fixed inputs, the ground truth, the probe's
prediction and a PCA map of the patch features (from `tips_bench.artifacts`).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tips_bench import colorize
from tips_bench.artifacts import Example, artifact_path, load_examples
from tips_bench.atomic import atomic_path
from tips_bench.report import Rows, as_frame, bar_chart, comparison_frame, decimals_for, signed

DENSE_TYPES = frozenset({"segmentation", "depth", "normals", "zeroshot_segmentation"})
PANEL_COLUMNS = ("input", "ground truth", "prediction", "PCA of patch features")
MAX_EXAMPLES = 4
THUMB = 128  # px: displayed width of every panel image
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1d232a;background:#fff;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #d9dee3;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#5b6670;font-size:12.5px}
table.cmp{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
.cmp th,.cmp td{padding:4px 8px;border-bottom:1px solid #eceff2;text-align:left;white-space:nowrap}
.cmp th{background:#f4f6f8;font-weight:600}.cmp td.num{text-align:right}
.better{color:#137333;font-weight:600}.worse{color:#b3261e;font-weight:600}.muted{color:#8a949e}
.mode{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#e8f0fe;color:#174ea6}
.mode.faithful{background:#e6f4ea;color:#137333}.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{border:1px solid #eceff2;border-radius:6px;padding:4px}.chart svg{display:block;height:auto;max-width:100%}
.panels{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.panel{border:1px solid #eceff2;border-radius:6px;padding:8px 10px}
.panel table td,.panel table th{padding:2px;font-size:12px;font-weight:normal;color:#5b6670;text-align:center}
.panel img{width:128px;image-rendering:pixelated;display:block}.note{color:#8a949e;font-style:italic}
"""


def write_html_report(data: Rows, out_dir: str | os.PathLike[str], results_path: str | os.PathLike[str] | None = None,
                      paper: Iterable[dict[str, Any]] | None = None, metrics: Sequence[str] | None = None,
                      title: str = "tips-bench report") -> Path:
    """Write ``out_dir/index.html`` atomically and return its path.

    ``data`` are result rows or their DataFrame (task names may carry ' (smoke)'; a ``base_task`` column,
    when present, names the task for artifact lookup). ``results_path`` locates the saved examples
    (``<results>.artifacts``); without it the dense panels say that none were found.
    """
    frame = as_frame(data)
    if "base_task" not in frame.columns:
        frame = frame.assign(base_task=frame["task"])
    long = comparison_frame(frame, paper, metrics)
    page = render_page(frame, long, results_path, title)
    path = Path(out_dir) / "index.html"
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_text(page, encoding="utf-8")
    os.chmod(path, 0o644)
    return path


def render_page(frame: pd.DataFrame, long: pd.DataFrame, results_path: str | os.PathLike[str] | None,
                title: str) -> str:
    """The whole HTML document."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(sorted(set(frame["code_version"]))) or "-"
    meta = (f"{len(frame)} result rows from {frame['run_id'].nunique()} runs; {frame['backbone'].nunique()} backbones, "
            f"{frame['task'].nunique()} tasks; code {versions}; store {results_path or '-'}; generated {stamp}")
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(meta)}</p>',
            "<h2>Comparison with the papers</h2>", comparison_html(long),
            "<h2>Charts</h2>", charts_html(long), dense_html(frame, results_path)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- table


def comparison_html(long: pd.DataFrame) -> str:
    """The long comparison table: one line per backbone and task/metric."""
    if long.empty:
        return '<p class="note">No results for the selected metrics.</p>'
    head = ("<tr><th>task</th><th>metric</th><th>backbone</th><th>ours</th><th>± std</th><th>seeds</th>"
            "<th>paper</th><th>Δ</th><th>protocol mode</th><th>frame</th></tr>")
    lines = []
    for _, group in long.groupby("column", sort=False):
        d = decimals_for([*group["mean"], *group["paper"].dropna()])
        for r in group.itertuples(index=False):
            lines.append(_table_line(r, d))
    return f'<table class="cmp"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>'


def _table_line(r: Any, d: int) -> str:
    arrow = "↑" if r.higher_is_better else "↓"
    std = "" if pd.isna(r.std) else f"{r.std:.{d}f}"
    if pd.isna(r.paper):
        paper, delta = '<td class="num muted">–</td>', '<td class="num muted">–</td>'
    else:
        better = None if round(r.delta, d) == 0 else (r.delta > 0) == bool(r.higher_is_better)
        cls = {True: "better", False: "worse"}.get(better, "")
        source = _e(f"{r.paper_model} — {r.paper_source}")
        paper = f'<td class="num" title="{source}">{r.paper:.{d}f}</td>'
        delta = f'<td class="num {cls}">{_e(signed(r.delta, d))}</td>'
    modes = "".join(f'<span class="mode {_e(m)}">{_e(m)}</span> ' for m in str(r.protocol_mode).split(";"))
    frame = _e(r.protocol_frame) if r.protocol_frame else '<span class="muted">–</span>'
    return (f"<tr><td>{_e(r.task)}</td><td>{_e(r.metric)} {arrow}</td><td>{_e(r.backbone)}</td>"
            f'<td class="num">{r.mean:.{d}f}</td><td class="num">{std}</td><td class="num">{int(r.n_seeds)}</td>'
            f"{paper}{delta}<td>{modes}</td><td>{frame}</td></tr>")


# ---------------------------------------------------------------- charts


def charts_html(long: pd.DataFrame) -> str:
    """One inline SVG per task, a bar chart per metric of it (ours ± std, paper as red diamonds)."""
    if long.empty:
        return '<p class="note">No charts: no results.</p>'
    parts = []
    for task, group in long.groupby("task", sort=True):
        metrics = list(dict.fromkeys(group["metric"]))
        parts.append(f'<div class="chart">{_task_svg(str(task), group, metrics)}</div>')
    return f'<div class="charts">{"".join(parts)}</div>'


def _task_svg(task: str, group: pd.DataFrame, metrics: list[str]) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_backbones = group["backbone"].nunique()
    width = max(3.6, 0.75 * n_backbones + 1.8)
    fig = Figure(figsize=(width * len(metrics), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        bar_chart(group[group["metric"] == metric], task, metric, ax=ax)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


# ---------------------------------------------------------------- dense panels


def dense_html(frame: pd.DataFrame, results_path: str | os.PathLike[str] | None) -> str:
    """A section per dense task, a panel per backbone (or a note where no examples were saved)."""
    types = frame["protocol"].map(lambda p: p.get("type", ""))
    dense = frame[types.isin(DENSE_TYPES)]
    if dense.empty:
        return ""
    parts = ["<h2>Dense predictions</h2>"]
    for task, rows in dense.groupby("task", sort=True):
        panels = [panel_html(str(backbone), runs, results_path) for backbone, runs in rows.groupby("backbone")]
        parts.append(f'<h3>{_e(task)}</h3><div class="panels">{"".join(panels)}</div>')
    return "\n".join(parts)


def panel_html(backbone: str, runs: pd.DataFrame, results_path: str | os.PathLike[str] | None) -> str:
    """The examples of the newest run of this backbone that saved any; a note when none did."""
    ordered = runs.sort_values("time", ascending=False).drop_duplicates("run_id")
    newest = ordered.iloc[0]
    if results_path is not None:
        for run in ordered.itertuples(index=False):
            path = artifact_path(results_path, run.run_id, backbone, run.base_task)
            if not path.is_file():
                continue
            try:
                examples = load_examples(path)[:MAX_EXAMPLES]
            except ValueError as exc:
                return _note_panel(backbone, f"examples of run {run.run_id[:8]} are unreadable ({exc})")
            return _examples_panel(backbone, run.run_id, examples)
    return _note_panel(backbone, f"no examples were saved for run {newest.run_id[:8]} (the task did not call "
                                 f"tips_bench.artifacts.save_examples); panel omitted")


def _note_panel(backbone: str, text: str) -> str:
    return f'<div class="panel"><b>{_e(backbone)}</b> <span class="note">{_e(text)}</span></div>'


def _examples_panel(backbone: str, run_id: str, examples: list[Example]) -> str:
    pcas = _pca_maps(examples)
    n_classes = _num_classes(examples)
    head = "".join(f"<th>{_e(c)}</th>" for c in PANEL_COLUMNS)
    lines = []
    for ex, pca in zip(examples, pcas, strict=True):
        target, prediction = _render_pair(ex, n_classes)
        h, w = ex.image.shape[:2]
        cells = [_img(ex.image, smooth=True), _img(target), _img(prediction),
                 _img(colorize.upscale(pca, h, w)) if pca is not None else _img(None)]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    kind = examples[0].kind
    return (f'<div class="panel"><b>{_e(backbone)}</b> <span class="meta">{_e(kind)}, run {_e(run_id[:8])}, '
            f"{len(examples)} fixed examples</span><table><tr>{head}</tr>{''.join(lines)}</table></div>")


def _pca_maps(examples: list[Example]) -> list[np.ndarray | None]:
    """One joint PCA per feature width (examples of one panel normally share it)."""
    out: list[np.ndarray | None] = [None] * len(examples)
    by_dim: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_dim.setdefault(ex.patch_features.shape[0], []).append(i)
    for indices in by_dim.values():
        for i, rgb in zip(indices, colorize.pca_rgb([examples[i].patch_features for i in indices]), strict=True):
            out[i] = rgb
    return out


def _num_classes(examples: list[Example]) -> int | None:
    labels = [a[(a >= 0) & (a != 255)] for ex in examples if ex.kind == "segmentation"
              for a in (ex.target, ex.prediction)]
    values = [int(a.max()) for a in labels if a.size]
    return max(values) + 1 if values else None


def _render_pair(ex: Example, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    if ex.kind == "segmentation":
        return colorize.label_colors(ex.target, n_classes), colorize.label_colors(ex.prediction, n_classes)
    if ex.kind == "depth":
        lo, hi = colorize.depth_range([ex.target])
        return colorize.depth_colors(ex.target, lo, hi), colorize.depth_colors(ex.prediction, lo, hi)
    return colorize.normal_colors(ex.target), colorize.normal_colors(ex.prediction)


def _img(rgb: np.ndarray | None, smooth: bool = False) -> str:
    """An <img> with the picture inlined as a PNG data URI, shrunk to at most 2x the displayed width."""
    if rgb is None:
        return '<span class="note">–</span>'
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if picture.width > 2 * THUMB:
        height = max(1, round(picture.height * 2 * THUMB / picture.width))
        picture = picture.resize((2 * THUMB, height), Image.Resampling.LANCZOS if smooth else Image.Resampling.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="" width="{THUMB}" src="data:image/png;base64,{data}">'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
