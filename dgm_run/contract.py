"""The types models and data sources share with the trainer: what a batch holds, what a model
may know of its data, how far training has come, and the pictures a model returns.

This module sits on the ground floor beside `checks` and `errors`: models and data import it,
it imports nothing of the project. A model returns pictures as data (`Grid`, `Scatter`,
`Heatmap`); the evaluation draws and logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data to size its networks."""

    shape: tuple[int, ...]
    n_classes: int
    is_image: bool
    n_train: int
    # Labelled training examples; None when the data is used unlabelled.
    n_labels: Optional[int] = None
    # Mixture data: mode centres (n_classes, D) and their standard deviation, for mode-coverage metrics.
    modes: Optional[Tensor] = None
    mode_std: Optional[float] = None
    # Every value lies in [0, 1] (images, one-hot points): what a Bernoulli likelihood needs.
    unit_interval: bool = True

    @property
    def semi_supervised(self) -> bool:
        return self.n_labels is not None


class Progress:
    """How far training has come, as 0-d tensors on the training device that the trainer updates
    in place before each batch: a loss may compute with them (e.g. a KL warm-up weight) and stays
    free of host values, so the step it belongs to can be captured and replayed."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # Epochs done, with the fraction of the current one: 2.5 halfway through the third epoch.
        self.epoch = torch.zeros((), device=device)
        self.step = torch.zeros((), device=device)
        # Share of all training steps done, in [0, 1].
        self.fraction = torch.zeros((), device=device)

    def update(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        self.step.fill_(step)
        self.epoch.fill_(step / steps_per_epoch)
        self.fraction.fill_(step / max(total_steps, 1))


@dataclass
class Batch:
    """One training batch: `x` unlabelled; the labelled part is present for semi-supervised data."""

    x: Tensor
    x_labelled: Optional[Tensor] = None
    y_labelled: Optional[Tensor] = None
    # Where training stands: the trainer's Progress (None outside training).
    progress: Optional[Progress] = None
    # The positions of x's and x_labelled's examples in the training set, for a model that computed
    # per-example values of the whole set once (GenerativeModel.training_set); None outside training.
    index: Optional[Tensor] = None
    index_labelled: Optional[Tensor] = None


@dataclass
class Grid:
    """Images (N, C, H, W) with values in [0, 1], drawn as a grid `nrow` images wide."""

    images: Tensor
    nrow: int = 8


@dataclass
class Scatter:
    """Points (N, 2), coloured by integer label; `background` points (M, 2) drawn grey beneath them."""

    points: Tensor
    labels: Optional[Tensor] = None
    title: str = ""
    background: Optional[Tensor] = None


@dataclass
class Heatmap:
    """values (H, W) over the rectangle extent = (x0, x1, y0, y1), row 0 at y0; optional points on top."""

    values: Tensor
    extent: tuple[float, float, float, float]
    title: str = ""
    points: Optional[Tensor] = None
