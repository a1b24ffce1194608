"""The model contract shared by every model and the one training loop.

A model declares its phases (groups of parameters updated together) and returns, for a
phase and a batch, a dict of named loss terms with the total under "loss". The trainer
runs `Config.schedule` (a list of {phase, steps}) on every batch, logging every term.
Everything else a model may offer (metrics, samples, pictures, codes) is a method below
with a default that offers nothing: the trainer and the evaluation call them all, never ask
whether a model has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from torch import Tensor, nn

from dgm_run.checks import check, check_positive
from dgm_run.contract import Batch, DataSpec, Grid, Heatmap, Scatter

Picture = Union[Scatter, Heatmap]


@dataclass
class ScheduleEntry:
    """One entry of a model's schedule: run `phase` for `steps` optimizer steps on every batch, in the epochs
    [from_epoch, until_epoch)."""

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
    schedule: list[ScheduleEntry] = field(default_factory=lambda: [ScheduleEntry()])
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
    """The contract: `phases`, `phase_parameters`, `loss`; the rest is optional."""

    Config = ModelConfig
    # Every phase the model has, and those a schedule must run (optim.check_schedule).
    phases: tuple[str, ...] = ("elbo",)
    required_phases: tuple[str, ...] = ()
    # Metrics of `evaluate` that are also reported per label (eval/class_<metric>/<label>).
    per_class_metrics: tuple[str, ...] = ()
    # The model trains on labelled and unlabelled examples (DataSpec.semi_supervised): a run on data
    # without data.n_labels gives it labels (train.give_labels).
    needs_labels: bool = False

    def __init__(self, cfg: ModelConfig, spec: DataSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec

    @property
    def schedule(self) -> list[ScheduleEntry]:
        """The phases the trainer runs on every batch (model.schedule)."""
        return self.cfg.schedule

    @property
    def simultaneous(self) -> bool:
        """Whether the schedule's entries take their gradients at the same parameters (model.simultaneous)."""
        return self.cfg.simultaneous

    @property
    def label(self) -> str:
        """The model's name in messages."""
        return type(self).__name__

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """The parameters `phase` updates; single-phase models update all that are trainable."""
        assert len(self.phases) == 1, "models with several phases must say which parameters each updates"
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def pretrained(self) -> dict[str, tuple[nn.Module, str]]:
        """Parts to load from a checkpoint file before training: {config key: (module, path)}."""
        return {}

    def training_set(self, examples: Callable[[Tensor], Tensor], n: int) -> None:
        """Given once before training: the `n` training examples, `examples(index)` those at the positions
        `index` as floats, never binarized. A model that computes per-example values of the whole set once
        (M1+M2's features) keeps it and reads its batches' positions (Batch.index); others ignore it."""

    # ------------------------------------------------------------ evaluation
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per-example metrics of a test batch, each of shape (B,); the evaluation averages them."""
        return {}

    def predict(self, x: Tensor) -> Optional[Tensor]:
        """Class probabilities of test images x, (B, K), whose error and accuracy the evaluation reports
        (per label too, with "accuracy" in per_class_metrics); None for a model that does not classify."""
        return None

    def evaluate_all(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        """Metrics computed once per evaluation from the whole test set (x, y), e.g. how many
        modes of a mixture the samples cover; values are floats or 0-d tensors."""
        return {}

    @property
    def grid_columns(self) -> int:
        """Width of the sample grid (class-conditional samples: one column per label)."""
        return 8

    def sample(self, n: int) -> Optional[Tensor]:
        """n samples shaped like the data, values in [0, 1] for images; None if not supported."""
        return None

    def reconstruct(self, x: Tensor) -> Optional[Tensor]:
        """Reconstructions of test images x, values in [0, 1]; None if not supported."""
        return None

    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """Further image grids by TensorBoard tag, made from test images x and their labels y (e.g. analogies)."""
        return {}

    def figures(self, x: Tensor, y: Tensor) -> dict[str, Picture]:
        """Plots by TensorBoard tag from the test set (e.g. latent codes of 2-D toys), as data."""
        return {}

    def latent(self, x: Tensor) -> Optional[Tensor]:
        """Codes of test images for TensorBoard's projector, (B, Z); None if the model has none."""
        return None
