"""Toy data generated in-process and seeded: AVB's four one-hot points, 2-D Gaussian mixtures, spirals.

Each source has its own `seed`, so the data set stays the same across model seeds. The label
of a point is the one-hot point, the mixture mode or the spiral arm it was drawn from; the
figures colour by it and the mixture's metrics count modes by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dgm_run.checks import check, check_choice, check_positive
from dgm_run.data.base import DataConfig, DataSource, Splits


@dataclass
class ToyConfig(DataConfig):
    # Points per epoch and in the test set.
    n_train: int = 50_000
    n_test: int = 5_000
    # Seed of the generated points (the run's `seed` does not change them).
    seed: int = 0
    binarize: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "n_train", "n_test")
        check(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")


class OneHot4(DataSource):
    """The four one-hot points of R^4 (AVB, Mescheder et al. 2017, section 5.1), equally often."""

    @dataclass
    class Config(ToyConfig):
        _target_: str = "dgm_run.data.toy.OneHot4"
        n_train: int = 10_000
        n_test: int = 4

    def load(self) -> Splits:
        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.arange(n) % 4
            return torch.eye(4)[y], y

        return Splits(*draw(self.cfg.n_train), *draw(self.cfg.n_test), n_classes=4)


class GMM2D(DataSource):
    """A mixture of equally weighted isotropic Gaussians in the plane, modes on a circle or a grid."""

    @dataclass
    class Config(ToyConfig):
        _target_: str = "dgm_run.data.toy.GMM2D"
        n_modes: int = 8
        # circle: modes evenly on a circle of radius `scale`; grid: a square grid with spacing `scale`.
        layout: str = "circle"
        scale: float = 2.0
        std: float = 0.02

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "n_modes")
            check_choice(self, "layout", ("circle", "grid"))
            side = math.isqrt(self.n_modes)
            check(
                self.layout == "circle" or side * side == self.n_modes,
                "n_modes",
                f"layout=grid needs a square number of modes (got {self.n_modes})",
            )
            check(self.scale > 0 and self.std > 0, "std", f"scale and std must be > 0 (got {self.scale}, {self.std})")

    def modes(self) -> Tensor:
        cfg = self.cfg
        if cfg.layout == "circle":
            angle = torch.arange(cfg.n_modes) * (2 * math.pi / cfg.n_modes)
            return cfg.scale * torch.stack([angle.cos(), angle.sin()], dim=1)
        side = math.isqrt(cfg.n_modes)
        ticks = (torch.arange(side) - (side - 1) / 2) * cfg.scale
        return torch.cartesian_prod(ticks, ticks)

    def load(self) -> Splits:
        modes, generator = self.modes(), torch.Generator().manual_seed(self.cfg.seed)

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(len(modes), (n,), generator=generator)
            return modes[y] + self.cfg.std * torch.randn(n, 2, generator=generator), y

        return Splits(
            *draw(self.cfg.n_train), *draw(self.cfg.n_test), n_classes=len(modes), modes=modes, mode_std=self.cfg.std
        )


class Spiral2D(DataSource):
    """Interleaved spiral arms in the plane with Gaussian noise across them."""

    @dataclass
    class Config(ToyConfig):
        _target_: str = "dgm_run.data.toy.Spiral2D"
        arms: int = 2
        # Turns of each arm around the centre, and its outer radius.
        turns: float = 1.0
        scale: float = 2.0
        noise: float = 0.05

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "arms")
            check(
                self.turns > 0 and self.scale > 0 and self.noise >= 0,
                "noise",
                f"turns and scale must be > 0, noise >= 0 (got {self.turns}, {self.scale}, {self.noise})",
            )

    def load(self) -> Splits:
        cfg, generator = self.cfg, torch.Generator().manual_seed(self.cfg.seed)

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(cfg.arms, (n,), generator=generator)
            # sqrt spreads the points evenly along the arm, whose length grows with the radius.
            t = torch.rand(n, generator=generator).sqrt()
            angle = 2 * math.pi * (cfg.turns * t + y / cfg.arms)
            points = cfg.scale * t.unsqueeze(1) * torch.stack([angle.cos(), angle.sin()], dim=1)
            return points + cfg.noise * torch.randn(n, 2, generator=generator), y

        return Splits(*draw(cfg.n_train), *draw(cfg.n_test), n_classes=cfg.arms)
