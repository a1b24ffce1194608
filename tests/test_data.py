"""Data: torchvision MNIST files read offline, balanced label splits, device batches, dynamic binarization."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
import torchvision

from dgm_run.data.base import DeviceData, balanced_labels
from dgm_run.data.digits import ASSETS, Digits
from dgm_run.data.mnist import MNIST
from dgm_run.errors import UserError


def digits(**overrides) -> DeviceData:
    cfg = Digits.Config(**overrides)
    return DeviceData(Digits(cfg).load(), cfg, batch_size=100, device=torch.device("cpu"))


def test_embedded_digits_are_the_mnist_test_set_split_8000_2000():
    splits = Digits(Digits.Config()).load()
    assert splits.x_train.shape == (8000, 1, 28, 28) and splits.x_test.shape == (2000, 1, 28, 28)
    assert splits.x_train.dtype == torch.uint8
    # Together the two parts are the official test set: its class counts, every fifth digit held out.
    labels = torch.cat([splits.y_train, splits.y_test])
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert splits.y_test[:3].tolist() == [7, 1, 0]  # digits 0, 5 and 10 of t10k: 7 2 1 0 4 1 4 9 5 9 0


def test_gz_folder_reads_like_torchvision_on_extracted_files(tmp_path):
    raw_gz, raw_plain = tmp_path / "gz" / "MNIST" / "raw", tmp_path / "plain" / "MNIST" / "raw"
    raw_gz.mkdir(parents=True)
    raw_plain.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            src = ASSETS / f"t10k-{kind}-ubyte.gz"
            shutil.copy(src, raw_gz / f"{split}-{kind}-ubyte.gz")
            (raw_plain / f"{split}-{kind}-ubyte").write_bytes(gzip.decompress(src.read_bytes()))
    ours = MNIST(MNIST.Config(root=str(tmp_path / "gz"))).load()
    theirs = torchvision.datasets.MNIST(str(tmp_path / "plain"), train=True, download=False)
    assert torch.equal(ours.x_train.squeeze(1), theirs.data) and torch.equal(ours.y_train, theirs.targets)


def test_balanced_labels_depend_only_on_split_seed():
    y = Digits(Digits.Config()).load().y_train
    torch.manual_seed(1)
    a = balanced_labels(y, 100, 10, seed=0)
    torch.manual_seed(2)
    b = balanced_labels(y, 100, 10, seed=0)
    c = balanced_labels(y, 100, 10, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert y[a].bincount().tolist() == [10] * 10 and len(set(a.tolist())) == 100


def test_the_numpy_draw_is_the_adgm_codes_shuffle_of_each_class_in_turn():
    y = Digits(Digits.Config()).load().y_train
    picked = balanced_labels(y, 100, 10, seed=123456, draw="numpy")
    # The ADGM code's way (data_preparation/mnist.py): one RandomState, a Python list of each class's
    # positions shuffled in place, class 0 first, the first n / 10 kept.
    state, expected = np.random.RandomState(123456), []
    for c in range(10):
        members = torch.nonzero(y == c).flatten().tolist()
        positions = list(range(len(members)))
        state.shuffle(positions)
        expected += [members[i] for i in positions[:10]]
    assert picked.tolist() == expected
    assert y[picked].bincount().tolist() == [10] * 10
    assert not torch.equal(picked, balanced_labels(y, 100, 10, seed=123456))
    assert not torch.equal(picked, balanced_labels(y, 100, 10, seed=1, draw="numpy"))


def test_balanced_labels_errors():
    y = torch.tensor([0, 0, 1, 1, 1])
    with pytest.raises(UserError, match="data.n_labels=3 must be divisible by the number of classes"):
        balanced_labels(y, 3, 2, seed=0)
    with pytest.raises(UserError, match="needs 3 examples of class 0, but the training set has 2"):
        balanced_labels(y, 6, 2, seed=0)


def test_batches_are_binarized_afresh_and_carry_labelled_parts():
    data = digits(n_labels=100, labelled_batch_size=50)
    plan = data.plan_epoch()
    first, again = data.batch(plan, 0), data.batch(plan, 0)
    assert first.x.shape == (100, 1, 28, 28) and set(first.x.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first.x, again.x)  # a fresh Bernoulli draw of the same digits
    assert first.x_labelled.shape == (50, 1, 28, 28) and first.y_labelled.shape == (50,)
    seen = torch.cat([plan.labelled_order[i * 50 : (i + 1) * 50] for i in range(data.steps_per_epoch)])
    assert set(seen.tolist()) <= set(data.labelled.tolist())
    counts = seen.bincount()[data.labelled]
    assert counts.max() - counts.min() <= 1  # every label is seen equally often within an epoch
    assert torch.equal(torch.sort(plan.order).values, torch.arange(8000))


def test_test_set_is_binarized_once_with_the_split_seed():
    torch.manual_seed(0)
    a = digits()
    torch.manual_seed(1)
    b = digits()
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, digits(split_seed=3).x_test)


def test_unbinarized_pixels_stay_grey():
    batch = digits(binarize=False).batch(digits(binarize=False).plan_epoch(), 0)
    assert 0 < ((batch.x > 0) & (batch.x < 1)).float().mean() < 0.5


def test_validation_set_is_held_out_from_training_with_the_split_seed():
    plain = digits(binarize=False)
    data = digits(binarize=False, n_validation=1000, n_labels=100)
    assert len(data.x_train) == 7000 and len(data.x_valid) == 1000 and data.steps_per_epoch == 70

    # Together the two sets are exactly the original training set: no digit in both, none lost.
    def keys(x):  # training digits stay uint8; held-out ones are floats in [0, 1]
        x = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
        return {row.tobytes() for row in x.flatten(1).numpy()}

    assert keys(data.x_train).isdisjoint(keys(data.x_valid))
    assert keys(data.x_train) | keys(data.x_valid) == keys(plain.x_train)
    assert int(data.labelled.max()) < 7000  # the labelled digits come from what is left for training
    assert torch.equal(digits(binarize=False, n_validation=1000).x_valid, data.x_valid)
    assert not torch.equal(digits(binarize=False, n_validation=1000, split_seed=1).x_valid, data.x_valid)
    assert set(data.eval_sets()) == {"eval", "valid", "unlabelled"} and set(plain.eval_sets()) == {"eval"}
    with pytest.raises(UserError, match="data.n_validation=8000 leaves no training examples"):
        digits(n_validation=8000)
