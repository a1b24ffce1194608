"""Curves from runs' event files: read a run's scalars, draw mean ± std bands.

Shared by results_table.py (--plot) and reproduce.py. Importing it imports TensorBoard's reader and
matplotlib, about a second: results_table.py imports it only when it draws.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar series of a run, {tag: {step: value}}; {} for a run without an event file. TensorBoard's
    own reader reads every event file of the folder in order and drops what a resumed run purged."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: every point, not a sample
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def band(ax: Axes, x: list[float], mean: list[float], std: list[float], label: str) -> None:
    """The mean as a line through its points (a single evaluation shows too) and mean ± std as a band of its
    colour (of no width for a single run)."""
    line, = ax.plot(x, mean, marker="o", markersize=3, label=label)
    ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color=line.get_color(), alpha=0.2, linewidth=0)


def draw(curves: dict[str, dict], metric: str, path: Path) -> None:
    """One band per group ({label: {"epoch", "mean", "std", "runs"}}) of `metric` against epochs, saved to
    `path` (its suffix names the format)."""
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # rendered by Agg, without pyplot: no display, no global figure state
    ax = figure.subplots()
    for label, curve in curves.items():
        band(ax, curve["epoch"], curve["mean"], curve["std"], f"{label} ({curve['runs']} runs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)
