"""Small models that exercise the trainer's contract without any real generative model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from dgm_run.data.base import Batch, DataSpec
from dgm_run.models.base import GenerativeModel, ModelConfig, ScheduleEntry


class TwoPlayer(GenerativeModel):
    """A generator and a critic, each a linear map, in the shape of AVB's two phases.

    Counts the optimizer steps of each phase per batch, and can turn its loss into NaN at a
    given step to test divergence handling.
    """

    @dataclass
    class Config(ModelConfig):
        _target_: str = "tests.toy_models.TwoPlayer"
        schedule: list[ScheduleEntry] = field(
            default_factory=lambda: [ScheduleEntry("adversary", 2), ScheduleEntry("primal", 1)]
        )
        nan_at_call: Optional[int] = None

    phases = ("adversary", "primal")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        dim = int(torch.tensor(spec.shape).prod())
        self.generator = nn.Linear(dim, dim)
        self.critic = nn.Linear(dim, 1)
        self.calls: list[str] = []

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list((self.critic if phase == "adversary" else self.generator).parameters())

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        self.calls.append(phase)
        x = batch.x.flatten(1)
        if phase == "adversary":
            fake = self.generator(x).detach()  # the critic's loss must not reach the generator
            loss = nn.functional.softplus(-self.critic(x)).mean() + nn.functional.softplus(self.critic(fake)).mean()
        else:
            for p in self.critic.parameters():
                p.requires_grad_(False)
            loss = -self.critic(self.generator(x)).mean() + (self.generator(x) - x).pow(2).mean()
            for p in self.critic.parameters():
                p.requires_grad_(True)
        if self.cfg.nan_at_call is not None and len(self.calls) >= self.cfg.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss, "magnitude": x.abs().mean()}


from dgm_run.data.base import DataConfig, DataSource, Splits  # noqa: E402


class Prototypes(DataSource):
    """Four classes of 8x8 binary images: a fixed random prototype per class with 10 % of pixels flipped."""

    @dataclass
    class Config(DataConfig):
        _target_: str = "tests.toy_models.Prototypes"

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(1234)
        prototypes = torch.rand(4, 1, 8, 8, generator=g) < 0.5

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.arange(n) % 4
            flips = torch.rand(n, 1, 8, 8, generator=g) < 0.1
            return ((prototypes[y] ^ flips).to(torch.uint8) * 255), y

        return Splits(*draw(800), *draw(200), n_classes=4)
