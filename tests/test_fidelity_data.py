"""The held-out test protocol of issue 13 (data.test_binarize): the test and validation digits
binarized once with the split seed, or their grey levels, never binarized."""

from __future__ import annotations

import pytest
import torch

from dgm_run.config import validate
from dgm_run.data.base import DeviceData
from dgm_run.data.digits import Digits
from dgm_run.errors import UserError
from tests.conftest import compose_cfg


def digits(**overrides) -> tuple[DeviceData, torch.Tensor]:
    """The embedded digits on the CPU with 500 validation digits, and the grey levels of the test set."""
    cfg = Digits.Config(n_validation=500, **overrides)
    splits = Digits(cfg).load()
    return DeviceData(splits, cfg, batch_size=100, device=torch.device("cpu")), splits.x_test.float() / 255.0


def test_grey_held_out_sets_are_the_grey_levels_exactly():
    torch.manual_seed(0)
    data, grey = digits(test_binarize="grey")
    assert torch.equal(data.x_test, grey)
    plain, _ = digits(binarize=False)  # the validation digits as grey levels, picked with the same split seed
    assert torch.equal(data.x_valid, plain.x_valid)
    for held_out in (data.x_test, data.x_valid):
        assert ((held_out > 0) & (held_out < 1)).any()  # grey levels, not a binarization
    # Training still draws a fresh binarization for every batch.
    batch = data.batch(data.plan_epoch(), 0)
    assert set(batch.x.unique().tolist()) == {0.0, 1.0}
    # Not from the global RNG: another seed gives the same held-out sets.
    torch.manual_seed(1)
    again, _ = digits(test_binarize="grey")
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.x_valid, data.x_valid)


def test_once_held_out_sets_are_binary_and_fixed_by_the_split_seed():
    torch.manual_seed(0)
    data, grey = digits()  # the default: once
    torch.manual_seed(1)
    again, _ = digits(test_binarize="once")
    other, _ = digits(split_seed=3)
    for name in ("x_test", "x_valid"):
        held_out = getattr(data, name)
        assert set(held_out.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(getattr(again, name), held_out)  # the split seed's draw, whatever the global RNG
    assert not torch.equal(other.x_test, data.x_test)
    # A Bernoulli draw of the grey levels: black stays 0, white stays 1, the rest on average the grey level.
    assert torch.equal(data.x_test[grey == 0], torch.zeros_like(grey[grey == 0]))
    assert torch.equal(data.x_test[grey == 1], torch.ones_like(grey[grey == 1]))
    middle = (grey > 0) & (grey < 1)
    assert abs(float(data.x_test[middle].mean() - grey[middle].mean())) < 0.01


def test_test_binarize_is_validated_with_its_key():
    assert validate(compose_cfg("data.test_binarize=grey")).data.test_binarize == "grey"
    with pytest.raises(UserError, match=r"data.test_binarize: 'mean' is not allowed; choose one of once, grey"):
        validate(compose_cfg("data.test_binarize=mean"))
