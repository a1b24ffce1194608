"""Pictures a model returns as data (contract.Scatter, contract.Heatmap), drawn as matplotlib figures
and rendered to images.

matplotlib draws off-screen (Agg). A picture is rendered once, and the same pixels go to TensorBoard
and into the run's animation of it (animation.py).
"""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dgm_run.contract import Heatmap, Scatter  # noqa: E402


def render(picture: Scatter | Heatmap) -> np.ndarray:
    """The picture as an RGB image (H, W, 3) of uint8; its figure is closed (pyplot keeps open ones)."""
    figure = draw(picture)
    figure.canvas.draw()
    image = np.ascontiguousarray(np.asarray(figure.canvas.buffer_rgba())[..., :3])
    plt.close(figure)
    return image


def draw(picture: Scatter | Heatmap) -> Figure:
    figure, ax = plt.subplots(figsize=(5, 5), dpi=80)
    if isinstance(picture, Heatmap):
        _heatmap(figure, ax, picture)
    else:
        _scatter(ax, picture)
    ax.set_title(picture.title)
    figure.tight_layout()
    return figure


def _scatter(ax, s: Scatter) -> None:
    if s.background is not None:
        bg = s.background.detach().float().cpu().numpy()
        ax.scatter(bg[:, 0], bg[:, 1], s=4, c="0.75", alpha=0.5, label="data", linewidths=0)
    pts = s.points.detach().float().cpu().numpy()
    if s.labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:blue", alpha=0.6, linewidths=0)
    else:
        labels = s.labels.detach().cpu().numpy()
        for value in sorted(set(labels.tolist())):
            chosen = pts[labels == value]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=4, alpha=0.6, label=str(value), linewidths=0)
        ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")


def _heatmap(figure: Figure, ax, h: Heatmap) -> None:
    image = ax.imshow(
        h.values.detach().float().cpu().numpy(), origin="lower", extent=h.extent, cmap="viridis", aspect="equal"
    )
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if h.points is not None:
        pts = h.points.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="white", alpha=0.4, linewidths=0)
