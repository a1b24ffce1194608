"""The model contract shared by every model and the one training loop.

A model declares its phases (groups of parameters updated together) and returns, for a
phase and a batch, a dict of named loss terms with the total under "loss". The trainer
runs `Config.schedule` (a list of {phase, steps}) on every batch, logging every term.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from torch import Tensor, nn

from dgm_run.config import check, check_positive
from dgm_run.data.base import Batch, DataSpec
from dgm_run.errors import UserError


@dataclass
class PhaseStep:
    phase: str = "elbo"
    steps: int = 1
    # The entry runs in epochs from_epoch <= epoch < until_epoch (null: to the end), e.g. to
    # pretrain one part of a model before another.
    from_epoch: int = 0
    until_epoch: Optional[int] = None

    def __post_init__(self) -> None:
        check_positive(self, "steps")
        check(self.from_epoch >= 0, "from_epoch", f"must be >= 0 (got {self.from_epoch})")

    def active(self, epoch: int) -> bool:
        return self.from_epoch <= epoch and (self.until_epoch is None or epoch < self.until_epoch)


@dataclass
class ModelConfig:
    """Fields every model accepts; models extend it with their own."""

    _target_: str = ""
    # The phases run on every batch, in order, each for `steps` optimizer steps.
    schedule: list[PhaseStep] = field(default_factory=lambda: [PhaseStep()])
    # false: the entries run one after another, each step seeing the previous step's update.
    # true: in each round every entry with steps left takes its gradient at the same
    # parameters on the same batch, then all of them step (the AVB authors' update).
    simultaneous: bool = False

    def __post_init__(self) -> None:
        check(len(self.schedule) > 0, "schedule", "must name at least one phase")


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Gradients do not reach these modules' parameters inside the block (they still pass
    through to the inputs): how one phase's loss uses another phase's networks."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class GenerativeModel(nn.Module):
    """The contract. Optional hooks the trainer uses when a model has them:
    `analogies(x)` (a grid row per test digit, `grid_columns` wide), `latent(x)` (codes for
    TensorBoard's projector), `per_class_metrics` (metrics also reported per label),
    `evaluate_all` (metrics of the model as a whole) and `figures` (matplotlib figures)."""

    Config = ModelConfig
    phases: tuple[str, ...] = ("elbo",)
    per_class_metrics: tuple[str, ...] = ()
    grid_columns = 8

    def __init__(self, cfg: ModelConfig, spec: DataSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec

    def require_unit_interval(self) -> None:
        """A Bernoulli likelihood models values in [0, 1]; other data is a user's mistake."""
        if not self.spec.unit_interval:
            raise UserError(f"model={type(self).__name__.lower()} has a Bernoulli likelihood and needs data in [0, 1] "
                            "(images, one-hot points); this data has other values (a 2-D toy? try model=ddgm)")

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """The parameters `phase` updates; single-phase models update all of them."""
        assert len(self.phases) == 1, "models with several phases must say which parameters each updates"
        return list(self.parameters())

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per-example metrics of a test batch, each of shape (B,); the trainer averages them."""
        return {}

    def evaluate_all(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        """Metrics computed once per evaluation from the whole test set (x, y), e.g. how many
        modes of a mixture the samples cover; values are floats or 0-d tensors."""
        return {}

    def figures(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        """matplotlib figures by TensorBoard tag, e.g. latent codes of 2-D toys; drawn at every evaluation."""
        return {}

    def sample(self, n: int) -> Optional[Tensor]:
        """n samples shaped like the data, values in [0, 1] for images; None if not supported."""
        return None

    def reconstruct(self, x: Tensor) -> Optional[Tensor]:
        return None
