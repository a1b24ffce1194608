"""Curves from runs' event files: read a run's scalars, draw mean ± std bands.

Shared by results_table.py (--plot) and reproduce.py. Importing it imports TensorBoard's reader and
matplotlib, about a second: results_table.py imports it only when it draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.files import check_event_files

# What to do about a damaged event file: a new evaluation writes events of its own.
EVENTS_REMEDY = "restore it, or delete it and evaluate the run again (dgm-run evaluate=RUN_DIR) into RUN_DIR/evaluation"


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar series of a run, {tag: {step: value}}; {} for a run without an event file. TensorBoard's
    own reader reads every event file of the folder in order and drops what a resumed run purged; a damaged
    file is a UserError naming it (files.check_event_files)."""
    check_event_files(run_dir, EVENTS_REMEDY)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: every point, not a sample
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def band(ax: Axes, x: list[float], mean: list[float], std: list[float], label: str) -> None:
    """The mean as a line through its points (a single evaluation shows too) and mean ± std as a band of its
    colour (of no width for a single run)."""
    (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label)
    ax.fill_between(
        x,
        [m - s for m, s in zip(mean, std)],
        [m + s for m, s in zip(mean, std)],
        color=line.get_color(),
        alpha=0.2,
        linewidth=0,
    )


def bands_figure(
    bands: list[tuple[list[float], list[float], list[float], str]],
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    extra: Callable[[Axes], None] = lambda ax: None,
) -> Figure:
    """A figure of bands (x, mean, std, label), drawn by Agg without pyplot (no display, no global figure
    state); `extra` draws more on the axes before the legend."""
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for x, mean, std, label in bands:
        band(ax, x, mean, std, label)
    extra(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, which="both" if log_y else "major", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def draw(curves: dict[str, dict], metric: str, path: Path) -> None:
    """One band per group ({label: {"epoch", "mean", "std", "runs"}}) of `metric` against epochs, saved to
    `path` (its suffix names the format)."""
    bands = [(c["epoch"], c["mean"], c["std"], f"{label} ({c['runs']} runs)") for label, c in curves.items()]
    bands_figure(bands, "epoch", metric).savefig(path)
