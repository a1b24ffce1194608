"""The embedded default data set: the official MNIST test set, shipped inside the package.

Every fifth digit is held out for testing (2,000), the rest train (8,000), so that
`dgm-run` with no arguments trains on real digits on a fresh, offline machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dgm_run.data.base import DataConfig, DataSource, Splits
from dgm_run.data.mnist import read_split

ASSETS = Path(__file__).parent / "assets"


class Digits(DataSource):
    @dataclass
    class Config(DataConfig):
        _target_: str = "dgm_run.data.digits.Digits"

    def load(self) -> Splits:
        images, labels = read_split(ASSETS, "test")
        test = torch.zeros(len(labels), dtype=torch.bool)
        test[::5] = True
        return Splits(images[~test], labels[~test], images[test], labels[test], n_classes=10)
