"""Pictures: ARC grids in the usual palette, task figures with attempts marked right or wrong, plots of a run's
per-task report, and the one-page HTML report of a run.

Owns the palette and how a grid, a task and a run are drawn. Matplotlib is used through `Figure` and the Agg canvas
only (never pyplot), so drawing sets no global backend and works the same in a notebook, a test and a headless run.
Run outputs (results JSON lines, the per-task CSV, submission.json, config.json) are read defensively: a column it
does not know is shown as it is, one it lacks is left out, a malformed line is skipped with a warning.
Knows nothing of models, training, decoding or how attempts were found.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from solver.tasks import Grid, Task

log = logging.getLogger(__name__)

# The ARC palette, colours 0..9: black, blue, red, green, yellow, grey, magenta, orange, azure, maroon.
PALETTE = np.array([(0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0), (170, 170, 170),
                    (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37)], dtype=np.uint8)
LINE_RGB = (85, 85, 85)
RIGHT, WRONG, UNKNOWN = "#2ECC40", "#FF4136", "#888888"

# Task figures: every panel is PANEL_PX square, a header band of HEADER_PX on top, at DPI; the PNG is exactly
# (columns x PANEL_PX, rows x PANEL_PX + HEADER_PX) pixels.
PANEL_PX = 160
HEADER_PX = 40
DPI = 100

RESULTS_GLOB = "*.jsonl"
TASK_COLUMNS = ("task_id", "task", "id")
ACCURACY_COLUMNS = ("fraction", "accuracy", "solved")  # not "score": that may be a likelihood
TIME_COLUMNS = ("seconds", "time_s", "wall_s", "elapsed_s", "total_s", "duration_s", "time", "elapsed")


# ---------------------------------------------------------------------------------------------------------------
# Grids as pixels

def grid_image(grid: Grid, cell: int = 12, line: int = 1) -> np.ndarray:
    """An RGB image (uint8, H x W x 3) of a grid: `cell` pixels per cell with `line`-pixel grey lines between."""
    g = np.asarray(grid, dtype=np.uint8)
    h, w = g.shape
    step = cell + line
    img = np.empty((h * step + line, w * step + line, 3), dtype=np.uint8)
    img[:] = LINE_RGB
    colours = PALETTE[np.clip(g, 0, 9)]
    for dy in range(cell):
        for dx in range(cell):
            img[line + dy::step, line + dx::step][:h, :w] = colours
    return img


def png_bytes(image: np.ndarray) -> bytes:
    """PNG file bytes of an RGB image."""
    from matplotlib.image import imsave
    buf = io.BytesIO()
    imsave(buf, image, format="png")
    return buf.getvalue()


def grid_data_uri(grid: Grid, max_px: int = 180) -> str:
    """A `data:image/png;base64,...` URI of a grid, cells sized so the longer side is at most about `max_px`."""
    cell = max(2, min(16, max_px // max(grid.shape) - 1))
    return "data:image/png;base64," + base64.b64encode(png_bytes(grid_image(grid, cell))).decode("ascii")


def same_grid(a: Grid | None, b: Grid | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(np.array_equal(a, b))


# ---------------------------------------------------------------------------------------------------------------
# Task figures

@dataclass
class Panel:
    """One grid to draw, its caption and frame colour (None: no frame)."""
    grid: Grid | None
    caption: str
    frame: str | None = None


def task_panels(task: Task, attempts: Sequence[tuple[Grid, Grid]] | None = None,
                max_demos: int | None = None) -> list[list[Panel]]:
    """The rows of a task figure: one per demo (input, output), then one per test input (input, truth where
    known, attempt 1, attempt 2), attempts framed green when right and red when wrong."""
    rows = [[Panel(a, f"demo {i + 1} input {_shape(a)}"), Panel(b, f"demo {i + 1} output {_shape(b)}")]
            for i, (a, b) in enumerate(task.train[:max_demos])]
    truths = task.test_outputs or []
    for i, grid in enumerate(task.test_inputs):
        truth = truths[i] if i < len(truths) else None
        row = [Panel(grid, f"test {i + 1} input {_shape(grid)}")]
        if truth is not None:
            row.append(Panel(truth, f"test {i + 1} truth {_shape(truth)}"))
        if attempts is not None:
            pair = attempts[i] if i < len(attempts) else (None, None)
            for k, guess in enumerate(pair, 1):
                if guess is None:
                    row.append(Panel(None, f"attempt {k}: none", WRONG if truth is not None else UNKNOWN))
                elif truth is None:
                    row.append(Panel(guess, f"attempt {k} {_shape(guess)}", UNKNOWN))
                else:
                    ok = same_grid(guess, truth)
                    row.append(Panel(guess, f"attempt {k} {'right' if ok else 'wrong'} {'✓' if ok else '✗'}",
                                     RIGHT if ok else WRONG))
        rows.append(row)
    return rows


def _shape(grid: Grid) -> str:
    return f"{grid.shape[0]}x{grid.shape[1]}"


def figure_size_px(rows: list[list[Panel]]) -> tuple[int, int]:
    """(width, height) in pixels of the PNG a task figure with these rows saves as."""
    return max(len(r) for r in rows) * PANEL_PX, len(rows) * PANEL_PX + HEADER_PX


def panels_figure(rows: list[list[Panel]], title: str = ""):
    """A matplotlib Figure (Agg canvas) laying out panel rows on a fixed pixel grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    width, height = figure_size_px(rows)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    if title:
        fig.text(0.5, 1 - HEADER_PX / 2 / height, title, ha="center", va="center", fontsize=13, weight="bold")
    margin, caption = 8, 18
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top = HEADER_PX + r * PANEL_PX + margin + caption
            rect = ((c * PANEL_PX + margin) / width, 1 - (HEADER_PX + (r + 1) * PANEL_PX - margin) / height,
                    (PANEL_PX - 2 * margin) / width, (HEADER_PX + (r + 1) * PANEL_PX - margin - top) / height)
            draw_panel(fig.add_axes(rect), panel)
    return fig


def draw_panel(ax, panel: Panel) -> None:
    """One grid on a matplotlib Axes: the image, its caption, a coloured frame when the panel has one."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(panel.caption, fontsize=8, color=panel.frame if panel.frame in (RIGHT, WRONG) else "black")
    if panel.grid is not None:
        cell = max(1, min(8, (PANEL_PX - 24) // max(panel.grid.shape) - 1))  # about one image pixel per screen pixel
        ax.imshow(grid_image(panel.grid, cell=cell), interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(panel.frame is not None)
        if panel.frame is not None:
            spine.set_color(panel.frame)
            spine.set_linewidth(3)


def task_figure(task: Task, attempts: Sequence[tuple[Grid, Grid]] | None = None, max_demos: int | None = None):
    """A Figure of a task: demos, test inputs, truth where known, and attempts marked right or wrong."""
    rows = task_panels(task, attempts, max_demos)
    title = task.id
    if attempts is not None and task.test_outputs:
        right = sum(any(same_grid(g, t) for g in pair if g is not None)
                    for pair, t in zip(attempts, task.test_outputs))
        title += f"  ({right}/{len(task.test_outputs)} test outputs right)"
    return panels_figure(rows, title)


def candidates_figure(candidates: Sequence, title: str = "", expected: Grid | None = None, limit: int = 8):
    """A Figure of ranked candidates (objects or dicts with `grid`, `votes`, `score`), best first, one row;
    with `expected`, the right one framed green and the others red."""
    panels = []
    for rank, cand in enumerate(list(candidates)[:limit], 1):
        grid = _field(cand, "grid")
        grid = None if grid is None else np.asarray(grid, dtype=np.uint8)
        votes, score = _field(cand, "votes"), _field(cand, "score")
        caption = f"#{rank} votes {votes}" + (f" score {score:.2f}" if isinstance(score, (int, float)) else "")
        frame = None if expected is None else RIGHT if same_grid(grid, expected) else WRONG
        panels.append(Panel(grid, caption, frame))
    if not panels:
        panels = [Panel(None, "no candidates")]
    return panels_figure([panels], title)


def _field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def figure_png(fig) -> bytes:
    """PNG bytes of a Figure, at its own size in pixels."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_task_png(task: Task, path: str | Path, attempts: Sequence[tuple[Grid, Grid]] | None = None,
                  max_demos: int | None = None) -> Path:
    """Draw a task (and attempts) into a PNG file of `figure_size_px` pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(task_figure(task, attempts, max_demos)))
    return path


# ---------------------------------------------------------------------------------------------------------------
# A run's outputs, read defensively

def load_results(workdir: str | Path) -> list[dict]:
    """Every JSON object line of the run's JSON-lines files (sorted by name); bad lines are skipped with a warning."""
    rows = []
    for path in sorted(Path(workdir).glob(RESULTS_GLOB)):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                log.warning("%s line %d skipped: not JSON (%s)", path, n, e)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def find_column(columns: Iterable[str], names: Sequence[str]) -> str | None:
    """The first of `names` among `columns` (exact, then case-insensitive), or None."""
    columns = list(columns)
    for name in names:
        if name in columns:
            return name
    lower = {c.lower(): c for c in columns}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def time_columns(columns: Iterable[str]) -> tuple[str | None, list[str]]:
    """(the total-time column, the per-stage time columns): a known time name is the total; a name ending in
    '_s' / '_seconds' / '_sec' is a stage. Without a known total, the stages are all there is."""
    columns = list(columns)
    total = find_column(columns, TIME_COLUMNS)
    stages = [c for c in columns if c != total and c.lower().endswith(("_s", "_seconds", "_sec"))]
    return total, stages


def run_table(workdir: str | Path, csv: str | Path | None = None):
    """The per-task table of a run: its CSV report (`csv`, else the one CSV in the work directory) when there is
    one, else the scalar fields of the results lines. The task column is renamed `task_id`; one row per task
    (the last line of a task wins)."""
    import pandas as pd
    workdir = Path(workdir)
    table = None
    paths = [Path(csv)] if csv else sorted(workdir.glob("*.csv"))
    for path in paths:
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as e:
            log.warning("%s not read: %s", path, e)
            continue
        if find_column(table.columns, TASK_COLUMNS):
            break
        table = None
    if table is None:
        rows = [{k: v for k, v in r.items() if v is None or isinstance(v, (str, int, float, bool))}
                for r in load_results(workdir)]
        table = pd.DataFrame(rows)
    key = find_column(table.columns, TASK_COLUMNS)
    if key is None:
        return pd.DataFrame({"task_id": []})
    table = table.rename(columns={key: "task_id"})
    table["task_id"] = table["task_id"].astype(str)
    return table.drop_duplicates("task_id", keep="last").reset_index(drop=True)


def accuracy(table):
    """Each task's fraction of right test outputs (a pandas Series), or None when the table does not know it
    (no such column, or the column is empty because solutions were unknown)."""
    import pandas as pd
    name = find_column(table.columns, ACCURACY_COLUMNS)
    if name is not None:
        values = pd.to_numeric(table[name], errors="coerce")
    elif {"correct", "tests"} <= set(table.columns):
        tests = pd.to_numeric(table["tests"], errors="coerce")
        values = pd.to_numeric(table["correct"], errors="coerce") / tests.where(tests > 0)
    else:
        return None
    return None if values.isna().all() else values


def _seconds(table, column: str) -> np.ndarray:
    import pandas as pd
    return pd.to_numeric(table[column], errors="coerce").fillna(0).to_numpy(dtype=float)


def time_parts(table) -> dict[str, np.ndarray]:
    """Seconds per task by part, to be stacked: the stages, and the rest of the total as 'other' (or the total
    alone when there are no stages). Empty when the table has no time column."""
    total, stages = time_columns(table.columns)
    parts = {c: _seconds(table, c) for c in stages}
    if total is not None:
        whole = _seconds(table, total)
        rest = np.clip(whole - sum(parts.values(), np.zeros(len(table))), 0, None)
        if not parts or rest.max(initial=0) > 0.01 * whole.max(initial=0):  # an 'other' of rounding errors is noise
            parts["other" if parts else total] = rest
    return parts


def report_figure(table, limit: int = 60):
    """A Figure of accuracy and time per task (bars, one per task) from a run table; panels it has no column for
    say so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    table = table.head(limit)
    n = max(len(table), 1)
    fig = Figure(figsize=(max(6.0, 0.25 * n + 2), 6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_time = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(table))
    acc = accuracy(table)
    if acc is not None:
        values = acc.fillna(0).to_numpy(dtype=float)
        colours = [RIGHT if v >= 1 else "#FFDC00" if v > 0 else WRONG for v in values]
        ax_acc.bar(x, values, color=colours)
        ax_acc.scatter(x, values, c=colours, s=14, zorder=3, clip_on=False)  # a wrong task shows as a dot at 0
        ax_acc.set_ylim(0, 1.05)
        ax_acc.set_ylabel("fraction right")
        ax_acc.set_title(f"accuracy per task (mean {acc.mean():.3f})")
    else:
        ax_acc.text(0.5, 0.5, "accuracy unknown (no solutions)", ha="center", va="center", transform=ax_acc.transAxes)
    parts = time_parts(table)
    bottom = np.zeros(len(table))
    for name, values in parts.items():
        ax_time.bar(x, values, bottom=bottom, label=name)
        bottom += values
    if parts:
        ax_time.set_ylabel("seconds")
        ax_time.set_title(f"time per task (total {bottom.sum():.0f} s)")
        ax_time.legend(fontsize=7)
    else:
        ax_time.text(0.5, 0.5, "no time column", ha="center", va="center", transform=ax_time.transAxes)
    ax_time.set_xticks(x, table["task_id"].tolist(), rotation=90, fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The HTML report

CSS = """body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}td.l{text-align:left}
.ok{color:#1a8f2a;font-weight:bold}.bad{color:#c0262c;font-weight:bold}.task{margin:18px 0;padding:8px;
border-top:1px solid #ccc}.row{display:flex;gap:14px;align-items:flex-end;flex-wrap:wrap}.cell{text-align:center;
font-size:12px}.cell img{image-rendering:pixelated;border:3px solid transparent}.cell img.right{border-color:#2ECC40}
.cell img.wrong{border-color:#FF4136}.summary span{margin-right:22px}"""


def _img(grid: Grid | None, caption: str, cls: str = "") -> str:
    if grid is None:
        return f'<div class="cell"><div>{html.escape(caption)}</div></div>'
    return (f'<div class="cell"><img class="{cls}" src="{grid_data_uri(grid)}" alt="{html.escape(caption)}">'
            f'<div>{html.escape(caption)}</div></div>')


def _task_section(task_id: str, task: Task | None, pairs: list | None) -> str:
    parts = [f'<div class="task" id="{html.escape(task_id)}"><b>{html.escape(task_id)}</b>']
    tests = task.test_inputs if task is not None else [None] * len(pairs or [])
    truths = (task.test_outputs if task is not None else None) or []
    for i, grid in enumerate(tests):
        truth = truths[i] if i < len(truths) else None
        cells = [_img(grid, f"test {i + 1} input")] if grid is not None else []
        if truth is not None:
            cells.append(_img(truth, "truth"))
        pair = pairs[i] if pairs and i < len(pairs) else None
        for k, guess in enumerate(pair or (), 1):
            ok = None if truth is None else same_grid(guess, truth)
            mark = "" if ok is None else " ✓" if ok else " ✗"
            cells.append(_img(guess, f"attempt {k}{mark}", "" if ok is None else "right" if ok else "wrong"))
        parts.append('<div class="row">' + "".join(cells) + "</div>")
    return "".join(parts) + "</div>"


def _table_html(table) -> str:
    cols = list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c == "task_id":
                cells.append(f'<td class="l"><a href="#{html.escape(str(v))}">{html.escape(str(v))}</a></td>')
            elif isinstance(v, float):
                text = "" if not np.isfinite(v) else f"{v:.0f}" if v == int(v) else f"{v:.3f}"
                cells.append(f"<td>{text}</td>")
            else:
                cells.append(f'<td class="l">{html.escape(str(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html_report(workdir: str | Path, tasks: dict[str, Task] | None = None, submission: str | Path | None = None,
                max_tasks: int = 100) -> str:
    """The one-page HTML report of a run: summary, the per-task table, the accuracy/time plot and, per task, the
    test inputs, truth and attempts as images (right ones framed green, wrong ones red)."""
    from solver.submission import read_submission
    from solver.tasks import TaskFileError
    workdir = Path(workdir)
    table = run_table(workdir)
    sub_path = Path(submission) if submission else workdir / "submission.json"
    attempts: dict = {}
    if sub_path.exists():
        try:
            attempts = read_submission(sub_path)
        except TaskFileError as e:
            log.warning("report without attempts: %s", e)
    if tasks and attempts:
        table = _with_scores(table, tasks, attempts)
    ids = list(dict.fromkeys(list(table["task_id"]) + list(attempts)))
    summary = [f"<span>tasks: <b>{len(ids)}</b></span>"]
    acc = accuracy(table) if len(table) else None
    if acc is not None:
        summary.append(f"<span>mean accuracy: <b>{acc.mean():.3f}</b></span>")
        if "correct" in table.columns and "tests" in table.columns:
            known = acc.notna()
            summary.append(f"<span>test outputs right: <b>{int(table['correct'][known].sum())}/"
                           f"{int(table['tests'][known].sum())}</b></span>")
    else:
        summary.append("<span>accuracy: <b>unknown</b> (no solutions)</span>")
    if "status" in table.columns:
        counts = table["status"].value_counts()
        summary.append("<span>status: <b>" + ", ".join(f"{v} {html.escape(str(k))}" for k, v in counts.items())
                       + "</b></span>")
    total = sum(time_parts(table).values(), np.zeros(len(table))).sum()
    if total:
        summary.append(f"<span>time in tasks: <b>{total:.0f} s</b></span>")
    config = workdir / "config.json"
    config_html = ""
    if config.exists():
        config_html = f"<details><summary>config.json</summary><pre>{html.escape(config.read_text())}</pre></details>"
    plot = ""
    if len(table):
        uri = base64.b64encode(figure_png(report_figure(table))).decode("ascii")
        plot = f'<p><img src="data:image/png;base64,{uri}" alt="accuracy and time per task"></p>'
    sections = [_task_section(t, (tasks or {}).get(t), attempts.get(t)) for t in ids[:max_tasks]]
    more = f"<p>{len(ids) - max_tasks} more tasks not drawn.</p>" if len(ids) > max_tasks else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ARC run {html.escape(workdir.name)}</title>"
            f"<style>{CSS}</style></head><body><h2>ARC run: {html.escape(str(workdir))}</h2>"
            f"<p class='summary'>{''.join(summary)}</p><p>written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"
            f"{config_html}{_table_html(table) if len(table.columns) > 1 else ''}{plot}{''.join(sections)}{more}"
            f"</body></html>")


def _with_scores(table, tasks: dict[str, Task], attempts: dict):
    """The table with `tests` / `correct` / `fraction` scored from the submission, when it does not know its
    accuracy itself and the tasks' solutions are known."""
    from solver.score import score_table
    truths = {t: tasks[t].test_outputs for t in attempts if t in tasks and tasks[t].test_outputs}
    if not truths or accuracy(table) is not None:
        return table
    scores = score_table(attempts, truths)[["task_id", "tests", "correct", "fraction"]]
    if not len(table):
        return scores
    table = table.drop(columns=[c for c in ("tests", "correct", "fraction") if c in table.columns])
    return table.merge(scores, on="task_id", how="left")


def write_html_report(workdir: str | Path, tasks: dict[str, Task] | None = None, out: str | Path | None = None,
                      submission: str | Path | None = None) -> Path:
    """Write the HTML report (default: WORKDIR/report.html) and return its path."""
    out = Path(out) if out else Path(workdir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_report(workdir, tasks, submission), encoding="utf-8")
    return out
