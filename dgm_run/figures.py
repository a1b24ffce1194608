"""Figures of 2-D data for TensorBoard: points coloured by label, and heat maps over the plane.

matplotlib draws off-screen (Agg); the logger renders each figure to an image and closes it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def scatter(points: Tensor, labels: Optional[Tensor] = None, title: str = "",
            background: Optional[Tensor] = None, label_names: Optional[Sequence[str]] = None) -> Figure:
    """Points (N, 2), coloured by integer label; `background` points (M, 2) drawn grey beneath them."""
    figure, ax = plt.subplots(figsize=(5, 5), dpi=80)
    if background is not None:
        bg = background.detach().float().cpu().numpy()
        ax.scatter(bg[:, 0], bg[:, 1], s=4, c="0.75", alpha=0.5, label="data", linewidths=0)
    pts = points.detach().float().cpu().numpy()
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:blue", alpha=0.6, linewidths=0)
    else:
        labels = labels.detach().cpu().numpy()
        for value in sorted(set(labels.tolist())):
            chosen = pts[labels == value]
            name = label_names[value] if label_names else str(value)
            ax.scatter(chosen[:, 0], chosen[:, 1], s=4, alpha=0.6, label=name, linewidths=0)
        ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    figure.tight_layout()
    return figure


def heatmap(values: Tensor, extent: tuple[float, float, float, float], title: str = "",
            points: Optional[Tensor] = None) -> Figure:
    """values (H, W) over the rectangle extent = (x0, x1, y0, y1), row 0 at y0; optional points on top."""
    figure, ax = plt.subplots(figsize=(5, 5), dpi=80)
    image = ax.imshow(values.detach().float().cpu().numpy(), origin="lower", extent=extent, cmap="viridis", aspect="equal")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if points is not None:
        pts = points.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="white", alpha=0.4, linewidths=0)
    ax.set_title(title)
    figure.tight_layout()
    return figure
