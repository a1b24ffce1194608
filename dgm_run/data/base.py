"""What every data source provides, and the device-resident batches the trainer consumes.

A data source loads a `Splits` (uint8 images or float points, integer labels) on the
CPU. `DeviceData` moves it to the training device once, draws the labelled subset, and
serves batches as index slices: no DataLoader, no host round trip on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from dgm_run.checks import check, check_choice, check_positive
from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError


@dataclass
class DataConfig:
    """Fields every data source accepts; sources extend it with their own."""

    _target_: str = ""
    # Labelled training examples, balanced per class; null: the data is used unlabelled.
    n_labels: Optional[int] = None
    # Semi-supervised data: labelled examples per batch, beside trainer.batch_size unlabelled ones.
    labelled_batch_size: int = 100
    # Seed of the labelled subset and of the test-set binarization, fixed across model seeds.
    split_seed: int = 0
    # Draw a fresh Bernoulli sample of the pixels for every batch (the papers' dynamic binarization).
    binarize: bool = True
    # With binarize: the held-out (test and validation) images. once: binarized once with the split seed,
    # so every evaluation sees the same digits; grey: their grey levels, never binarized (what the ADGM and
    # M1+M2 authors' code classifies); mean: binarized afresh test_binarizations times in every evaluation,
    # each metric the mean over them, error and accuracy those of the mean prediction. Without binarize
    # every set is grey.
    test_binarize: str = "once"
    test_binarizations: int = 10
    # Training examples held out (drawn with split_seed) as a validation set, so that a
    # hyper-parameter search need not tune on the test set; metrics under valid/.
    n_validation: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "n_labels", "labelled_batch_size", "test_binarizations")
        check(self.n_validation >= 0, "n_validation", f"must be >= 0 (got {self.n_validation})")
        check(self.split_seed >= 0, "split_seed", f"must be >= 0 (got {self.split_seed})")
        check_choice(self, "test_binarize", ("once", "grey", "mean"))


def bernoulli(p: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A Bernoulli draw per pixel of probabilities p, as uniform < p: the distribution of torch.bernoulli,
    4x faster on CPU."""
    return (torch.rand(p.shape, generator=generator, device=p.device) < p).float()


@dataclass
class Splits:
    """A data set on the CPU. Images are uint8 (N, C, H, W); labels int64 (N,)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    # Mixture data: the centre of each mode (n_classes, D) and the modes' standard deviation.
    modes: Optional[Tensor] = None
    mode_std: Optional[float] = None


class DataSource:
    """Base of the data sources named by `data._target_`."""

    Config = DataConfig

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def load(self) -> Splits:
        raise NotImplementedError


@dataclass
class EpochPlan:
    """The random order of one epoch; kept in checkpoints so a run resumes mid-epoch exactly."""

    order: Tensor
    labelled_order: Optional[Tensor]


def balanced_labels(y: Tensor, n_labels: int, n_classes: int, seed: int) -> Tensor:
    """Indices of n_labels examples, n_labels / n_classes of each class, drawn with `seed`."""
    if n_labels % n_classes:
        raise UserError(f"data.n_labels={n_labels} must be divisible by the number of classes ({n_classes})")
    per_class = n_labels // n_classes
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(n_classes):
        members = torch.nonzero(y == c).flatten()
        if len(members) < per_class:
            raise UserError(f"data.n_labels={n_labels} needs {per_class} examples of class {c}, "
                            f"but the training set has {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picked)


class DeviceData:
    """The data set resident on `device`, served as batches of index slices."""

    def __init__(self, splits: Splits, cfg: DataConfig, batch_size: int, device: torch.device) -> None:
        x_train, y_train = splits.x_train, splits.y_train
        self.x_valid = self.y_valid = None
        if cfg.n_validation:
            if cfg.n_validation >= len(x_train):
                raise UserError(f"data.n_validation={cfg.n_validation} leaves no training examples "
                                f"(the training set has {len(x_train)})")
            order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.split_seed))
            valid, train = order[:cfg.n_validation], order[cfg.n_validation:].sort().values
            self.x_valid, self.y_valid = x_train[valid], y_train[valid]
            x_train, y_train = x_train[train], y_train[train]
        n_train = len(x_train)
        if cfg.n_labels is not None and cfg.n_labels > n_train:
            raise UserError(f"data.n_labels={cfg.n_labels} is larger than the training set ({n_train} examples)")
        if batch_size > n_train:
            raise UserError(f"trainer.batch_size={batch_size} is larger than the training set ({n_train} examples)")
        self.cfg = cfg
        self.n_classes = splits.n_classes
        self.shape = tuple(splits.x_train.shape[1:])
        self.batch_size = batch_size
        self.labelled_batch_size = cfg.labelled_batch_size if cfg.n_labels is not None else 0
        self.steps_per_epoch = n_train // batch_size  # the last, partial batch is dropped
        self.x_train = x_train.to(device)
        self.y_train = y_train.to(device)
        self.y_test = splits.y_test.to(device)
        # test_binarize=once: one draw from the split seed, the same digits in every evaluation and run.
        once = cfg.test_binarize == "once"
        def held_out(x: Tensor, seed: int) -> Tensor:
            return self._to_float(x, torch.Generator().manual_seed(seed), once).to(device)
        self.x_test = held_out(splits.x_test, cfg.split_seed)
        if self.x_valid is not None:
            self.x_valid = held_out(self.x_valid, cfg.split_seed + 1)
            self.y_valid = self.y_valid.to(device)
        # test_binarize=mean: the held-out sets stay grey, and each evaluation draws binarizations of them.
        self.fresh_held_out = cfg.test_binarize == "mean" and cfg.binarize and self.is_image
        self.held_out_draws = cfg.test_binarizations if self.fresh_held_out else 1
        self.modes, self.mode_std = splits.modes, splits.mode_std
        self.unit_interval = splits.x_train.dtype == torch.uint8 or bool(
            (splits.x_train.min() >= 0) & (splits.x_train.max() <= 1))
        self.labelled = None
        if cfg.n_labels is not None:
            self.labelled = balanced_labels(y_train, cfg.n_labels, splits.n_classes, cfg.split_seed).to(device)

    @property
    def samples_per_step(self) -> int:
        """Examples in one batch, labelled and unlabelled."""
        return self.batch_size + self.labelled_batch_size

    @property
    def is_image(self) -> bool:
        return self.x_train.dtype == torch.uint8

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.shape, self.n_classes, self.is_image, len(self.x_train), self.cfg.n_labels,
                        self.modes, self.mode_std, self.unit_interval)

    def _to_float(self, x: Tensor, generator: Optional[torch.Generator] = None, binarize: bool = True) -> Tensor:
        """Images as floats in [0, 1], binarized when data.binarize and `binarize` both say so."""
        if not self.is_image:
            return x.float()
        x = x.float() / 255.0
        if not (self.cfg.binarize and binarize):
            return x
        return bernoulli(x, generator)

    def held_out_draw(self, x: Tensor) -> Tensor:
        """A held-out batch as the model is evaluated on it: a fresh binarization of its grey levels under
        test_binarize=mean (one of held_out_draws), else as stored."""
        return bernoulli(x) if self.fresh_held_out else x

    def plan_epoch(self) -> EpochPlan:
        """Draw the order of the next epoch from the global RNG (saved in checkpoints)."""
        device = self.x_train.device
        order = torch.randperm(len(self.x_train), device=device)
        labelled_order = None
        if self.labelled is not None:
            # Cycle through the labelled set in fresh random orders, so each label is seen equally often.
            n_l = len(self.labelled)
            repeats = math.ceil(self.steps_per_epoch * self.labelled_batch_size / n_l)
            labelled_order = torch.cat([self.labelled[torch.randperm(n_l, device=device)] for _ in range(repeats)])
        return EpochPlan(order, labelled_order)

    def batch(self, plan: EpochPlan, i: int) -> Batch:
        index = plan.order[i * self.batch_size:(i + 1) * self.batch_size]
        batch = Batch(x=self._to_float(self.x_train[index]), index=index)
        if plan.labelled_order is not None:
            lb = self.labelled_batch_size
            index_l = plan.labelled_order[i * lb:(i + 1) * lb]
            batch.x_labelled = self._to_float(self.x_train[index_l])
            batch.y_labelled = self.y_train[index_l]
            batch.index_labelled = index_l
        return batch

    def unbinarized(self, index: Tensor) -> Tensor:
        """Training examples at the positions `index` as floats, never binarized (images: grey levels)."""
        return self._to_float(self.x_train[index], binarize=False)

    def eval_sets(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The held-out sets by metric prefix: eval/ for the test set, valid/ for the validation set."""
        sets = {"eval": (self.x_test, self.y_test)}
        if self.x_valid is not None:
            sets["valid"] = (self.x_valid, self.y_valid)
        return sets
