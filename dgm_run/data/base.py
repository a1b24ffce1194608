"""What every data source provides, and the device-resident batches the trainer consumes.

A data source loads a `Splits` (uint8 images or float points, integer labels) on the
CPU. `DeviceData` moves it to the training device once, draws the labelled subset, and
serves batches as index slices: no DataLoader, no host round trip on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from dgm_run.checks import check, check_choice, check_positive
from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.metrics import UNLABELLED


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
    # How the labelled subset is drawn from split_seed, the same number of each class. torch: a torch
    # permutation of each class's examples; numpy: NumPy's legacy RandomState(split_seed) shuffling each
    # class's examples in turn, class 0 first, and taking the first ones (the ADGM code's draw).
    labelled_draw: str = "torch"
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
    # Semi-supervised data: up to this many training examples whose labels the model never sees (drawn with
    # split_seed from those outside the labelled subset) on which the classifier is scored at every evaluation,
    # eval/unlabelled_error; what the ADGM authors' log calls "valid". 0: none.
    n_unlabelled_eval: int = 10000
    # Which ones. drawn: with split_seed; last: the last n_unlabelled_eval training examples, less any
    # labelled one (on MNIST the validation part of mnist.pkl.gz, the ADGM authors' log's "valid" digits).
    unlabelled_eval_digits: str = "drawn"
    # The order of the batches (their unlabelled part on semi-supervised data). shuffle: a new random order
    # every epoch; fixed: one order drawn with split_seed, the same every epoch (the SDGM authors' code);
    # class_sorted: sorted by class, within a class in the data set's order, the same every epoch (the code
    # behind the ADGM authors' published log).
    unlabelled_order: str = "shuffle"
    # The labelled part of the batches, cycling through the labelled set. shuffle: in fresh random orders;
    # fixed: in one order drawn with split_seed, the same sequence every epoch.
    labelled_order: str = "shuffle"

    def __post_init__(self) -> None:
        check_positive(self, "n_labels", "labelled_batch_size", "test_binarizations")
        check(self.n_validation >= 0, "n_validation", f"must be >= 0 (got {self.n_validation})")
        check(self.n_unlabelled_eval >= 0, "n_unlabelled_eval", f"must be >= 0 (got {self.n_unlabelled_eval})")
        check(self.split_seed >= 0, "split_seed", f"must be >= 0 (got {self.split_seed})")
        check_choice(self, "test_binarize", ("once", "grey", "mean"))
        check_choice(self, "labelled_draw", ("torch", "numpy"))
        check_choice(self, "unlabelled_eval_digits", ("drawn", "last"))
        check_choice(self, "unlabelled_order", ("shuffle", "fixed", "class_sorted"))
        check_choice(self, "labelled_order", ("shuffle", "fixed"))


def bernoulli(p: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A Bernoulli draw per pixel of probabilities p, as uniform < p: the distribution of torch.bernoulli,
    whose own kernel is the slower one on CPU."""
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


# Test images kept as grey levels beside the evaluated ones (sample quality's reference digits).
MAX_REFERENCE = 10_000


def split_generator(cfg: DataConfig, stream: int) -> torch.Generator:
    """A CPU generator from the split seed, `stream` keeping the fixed draws apart: the binarization of the
    test digits 0 and of the validation digits 1, the fixed unlabelled order 2, the fixed labelled order 3,
    the unlabelled evaluation digits 4 and their binarization 5."""
    return torch.Generator().manual_seed(cfg.split_seed + stream)


@dataclass
class EpochPlan:
    """The random order of one epoch; kept in checkpoints so a run resumes mid-epoch exactly."""

    order: Tensor
    labelled_order: Optional[Tensor]


def balanced_labels(y: Tensor, n_labels: int, n_classes: int, seed: int, draw: str = "torch") -> Tensor:
    """Indices of n_labels examples, n_labels / n_classes of each class, drawn with `seed` (data.labelled_draw:
    a permutation of each class's examples in turn, torch's or NumPy's legacy RandomState's)."""
    if n_labels % n_classes:
        raise UserError(f"data.n_labels={n_labels} must be divisible by the number of classes ({n_classes})")
    per_class = n_labels // n_classes
    # numpy: RandomState.permutation(n) shuffles arange(n) in place, the stream the ADGM code's rng.shuffle of
    # each class's index list draws (ml-lab/auxiliary-deep-generative-models, data_preparation/mnist.py).
    state = np.random.RandomState(seed) if draw == "numpy" else None
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(n_classes):
        members = torch.nonzero(y == c).flatten()
        if len(members) < per_class:
            raise UserError(
                f"data.n_labels={n_labels} needs {per_class} examples of class {c}, "
                f"but the training set has {len(members)}"
            )
        n = len(members)
        order = torch.from_numpy(state.permutation(n)) if state is not None else torch.randperm(n, generator=generator)
        picked.append(members[order[:per_class]])
    return torch.cat(picked)


class DeviceData:
    """The data set resident on `device`, served as batches of index slices."""

    def __init__(self, splits: Splits, cfg: DataConfig, batch_size: int, device: torch.device) -> None:
        x_train, y_train = splits.x_train, splits.y_train
        self.x_valid = self.y_valid = None
        if cfg.n_validation:
            if cfg.n_validation >= len(x_train):
                raise UserError(
                    f"data.n_validation={cfg.n_validation} leaves no training examples "
                    f"(the training set has {len(x_train)})"
                )
            order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.split_seed))
            valid, train = order[: cfg.n_validation], order[cfg.n_validation :].sort().values
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

        def held_out(x: Tensor, stream: int) -> Tensor:
            return self._to_float(x, split_generator(cfg, stream), once).to(device)

        self.x_test = held_out(splits.x_test, 0)
        # The test images' grey levels, whatever their binarization: what samples' quality is measured against.
        self.x_test_grey = self._to_float(splits.x_test[:MAX_REFERENCE], binarize=False).to(device)
        if self.x_valid is not None:
            self.x_valid = held_out(self.x_valid, 1)
            self.y_valid = self.y_valid.to(device)
        # test_binarize=mean: the held-out sets stay grey, and each evaluation draws binarizations of them.
        self.fresh_held_out = cfg.test_binarize == "mean" and cfg.binarize and self.is_image
        self.held_out_binarizations = cfg.test_binarizations if self.fresh_held_out else 1
        self.modes, self.mode_std = splits.modes, splits.mode_std
        self.unit_interval = splits.x_train.dtype == torch.uint8 or bool(
            (splits.x_train.min() >= 0) & (splits.x_train.max() <= 1)
        )
        self.labelled = None
        if cfg.n_labels is not None:
            self.labelled = balanced_labels(
                y_train, cfg.n_labels, splits.n_classes, cfg.split_seed, cfg.labelled_draw
            ).to(device)
        # Training digits outside the labelled subset, scored like a held-out set (eval_sets); their
        # indices in the training set, in its order.
        self.unlabelled_eval_index = None
        if self.labelled is not None and cfg.n_unlabelled_eval:
            outside = torch.ones(n_train, dtype=torch.bool)
            outside[self.labelled.cpu()] = False
            if cfg.unlabelled_eval_digits == "last":
                outside[: -cfg.n_unlabelled_eval] = False
                self.unlabelled_eval_index = outside.nonzero().flatten().to(device)
            else:
                candidates = outside.nonzero().flatten()
                picked = torch.randperm(len(candidates), generator=split_generator(cfg, 4))[: cfg.n_unlabelled_eval]
                self.unlabelled_eval_index = candidates[picked].sort().values.to(device)
            self.x_unlabelled_eval = held_out(x_train[self.unlabelled_eval_index.cpu()], 5)
            self.y_unlabelled_eval = self.y_train[self.unlabelled_eval_index]
        # The orders that stay the same every epoch, drawn once; None: drawn afresh by plan_epoch.
        self.fixed_order = None
        if cfg.unlabelled_order == "fixed":
            self.fixed_order = torch.randperm(n_train, generator=split_generator(cfg, 2)).to(device)
        elif cfg.unlabelled_order == "class_sorted":
            # Stable: within a class the data set's order, as the ADGM code stacks them (np.where per class).
            self.fixed_order = torch.sort(y_train, stable=True).indices.to(device)
        self.fixed_labelled_order = None
        if self.labelled is not None:
            n_l = len(self.labelled)
            # Enough rounds of the labelled set for an epoch's batches, so each label is seen equally often.
            self.labelled_rounds = math.ceil(self.steps_per_epoch * self.labelled_batch_size / n_l)
            if cfg.labelled_order == "fixed":
                once_round = self.labelled[torch.randperm(n_l, generator=split_generator(cfg, 3)).to(device)]
                self.fixed_labelled_order = once_round.repeat(self.labelled_rounds)

    @property
    def samples_per_step(self) -> int:
        """Examples in one batch, labelled and unlabelled."""
        return self.batch_size + self.labelled_batch_size

    @property
    def is_image(self) -> bool:
        return self.x_train.dtype == torch.uint8

    @property
    def spec(self) -> DataSpec:
        return DataSpec(
            self.shape,
            self.n_classes,
            self.is_image,
            len(self.x_train),
            self.cfg.n_labels,
            self.modes,
            self.mode_std,
            self.unit_interval,
        )

    def _to_float(self, x: Tensor, generator: Optional[torch.Generator] = None, binarize: bool = True) -> Tensor:
        """Images as floats in [0, 1], binarized when data.binarize and `binarize` both say so."""
        if not self.is_image:
            return x.float()
        x = x.float() / 255.0
        if not (self.cfg.binarize and binarize):
            return x
        return bernoulli(x, generator)

    def binarized_held_out(self, x: Tensor) -> Tensor:
        """A held-out batch as the model is evaluated on it: a fresh binarization of its grey levels under
        test_binarize=mean (one of held_out_binarizations), else as stored."""
        return bernoulli(x) if self.fresh_held_out else x

    def plan_epoch(self) -> EpochPlan:
        """The order of the next epoch: the fixed orders, or draws from the global RNG (saved in checkpoints)."""
        device = self.x_train.device
        order = self.fixed_order if self.fixed_order is not None else torch.randperm(len(self.x_train), device=device)
        labelled_order = self.fixed_labelled_order
        if self.labelled is not None and labelled_order is None:
            # Every round of the labelled set in a fresh random order, all rounds in one draw: each row of
            # uniforms sorts into a uniform permutation (float64: ties, which would bias it, do not occur).
            keys = torch.rand(self.labelled_rounds, len(self.labelled), dtype=torch.float64, device=device)
            labelled_order = self.labelled[keys.argsort(dim=1)].flatten()
        return EpochPlan(order, labelled_order)

    def batch(self, plan: EpochPlan, i: int) -> Batch:
        index = plan.order[i * self.batch_size : (i + 1) * self.batch_size]
        batch = Batch(x=self._to_float(self.x_train[index]), index=index)
        if plan.labelled_order is not None:
            lb = self.labelled_batch_size
            index_l = plan.labelled_order[i * lb : (i + 1) * lb]
            batch.x_labelled = self._to_float(self.x_train[index_l])
            batch.y_labelled = self.y_train[index_l]
            batch.index_labelled = index_l
        return batch

    def unbinarized(self, index: Tensor) -> Tensor:
        """Training examples at the positions `index` as floats, never binarized (images: grey levels)."""
        return self._to_float(self.x_train[index], binarize=False)

    def eval_sets(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The sets an evaluation scores, by name (dgm_run.metrics.set_metric names their metrics): eval for
        the test set, valid for the validation set, unlabelled for the unlabelled evaluation digits."""
        sets = {"eval": (self.x_test, self.y_test)}
        if self.x_valid is not None:
            sets["valid"] = (self.x_valid, self.y_valid)
        if self.unlabelled_eval_index is not None:
            sets[UNLABELLED] = (self.x_unlabelled_eval, self.y_unlabelled_eval)
        return sets
