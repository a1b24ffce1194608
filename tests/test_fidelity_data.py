"""The held-out test protocol of issue 13 (data.test_binarize): the test and validation digits
binarized once with the split seed, their grey levels, never binarized, or binarized afresh several
times in every evaluation, the metrics and the prediction averaged over the draws."""

from __future__ import annotations

import pytest
import torch

from dgm_run.config import LoggerConfig, validate
from dgm_run.data.base import DeviceData
from dgm_run.data.digits import Digits
from dgm_run.errors import UserError
from dgm_run.evaluate import Evaluator
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.tensorboard import TensorBoardLogger
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
    assert validate(compose_cfg("data.test_binarize=mean")).data.test_binarize == "mean"
    with pytest.raises(UserError, match=r"data.test_binarize: 'twice' is not allowed; choose one of once, grey, mean"):
        validate(compose_cfg("data.test_binarize=twice"))
    with pytest.raises(UserError, match=r"data.test_binarizations"):
        validate(compose_cfg("data.test_binarize=mean", "data.test_binarizations=0"))


def test_mean_held_out_sets_stay_grey_and_are_drawn_afresh():
    data, grey = digits(test_binarize="mean", test_binarizations=3)
    assert torch.equal(data.x_test, grey) and data.held_out_binarizations == 3
    first, second = data.binarized_held_out(data.x_test[:50]), data.binarized_held_out(data.x_test[:50])
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)
    for protocol in ("once", "grey"):  # the held-out sets as stored, one draw
        stored, _ = digits(test_binarize=protocol)
        assert stored.held_out_binarizations == 1 and stored.binarized_held_out(stored.x_test) is stored.x_test
    plain, _ = digits(test_binarize="mean", binarize=False)  # grey data everywhere: nothing to draw
    assert plain.held_out_binarizations == 1 and plain.binarized_held_out(plain.x_test) is plain.x_test


def test_mean_protocol_averages_the_metrics_and_classifies_by_the_mean_prediction(tmp_path):
    """data.test_binarize=mean: the error is that of the mean of q(y|x) over the draws (not the mean error),
    the log-likelihood the mean of the draws' log-likelihoods."""
    data, _ = digits(test_binarize="mean", test_binarizations=4, n_labels=100)
    torch.manual_seed(0)
    model = M2(M2.Config(hidden=[16], z_dim=4, iw_samples=2), data.spec)
    model.eval()
    evaluator = Evaluator(
        model,
        data,
        TensorBoardLogger(tmp_path, enabled=False),
        LoggerConfig(),
        seed=0,
        batch_size=100,
        autocast=torch.autocast("cpu", enabled=False),
    )
    x, y = data.x_test[:100], data.y_test[:100]
    torch.manual_seed(1)
    got = evaluator.batch_metrics(x, y)
    torch.manual_seed(1)  # the same four draws, by hand
    probs, log_likelihoods = [], []
    for _ in range(4):
        drawn = data.binarized_held_out(x)
        assert set(drawn.unique().tolist()) == {0.0, 1.0}
        probs.append(model.predict(drawn))
        log_likelihoods.append(model.evaluate(drawn, y)["log_likelihood"])
    mean_prediction = torch.stack(probs).mean(0)
    assert torch.equal(got["error"], (mean_prediction.argmax(-1) != y).float())
    assert torch.equal(got["accuracy"], 1.0 - got["error"])
    assert torch.allclose(got["log_likelihood"], torch.stack(log_likelihoods).mean(0))
    assert not torch.allclose(log_likelihoods[0], log_likelihoods[1])  # the draws differ
