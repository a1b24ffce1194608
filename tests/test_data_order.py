"""The order of the batches: data.unlabelled_order (shuffle, fixed, class_sorted) and data.labelled_order
(shuffle, fixed); each a stated order, and a run resumed mid-epoch under it ends exactly where an
uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from dgm_run import checkpoint
from dgm_run.config import validate
from dgm_run.data.base import DeviceData
from dgm_run.data.digits import Digits
from dgm_run.errors import UserError
from tests.conftest import compose_cfg


def digits(**overrides) -> DeviceData:
    cfg = Digits.Config(**{"n_labels": 100, **overrides})
    return DeviceData(Digits(cfg).load(), cfg, batch_size=100, device=torch.device("cpu"))


def unlabelled_classes(data: DeviceData, plan) -> list[set[int]]:
    """The classes in each batch's unlabelled part (batch i serves the digits of order[i * 100:(i + 1) * 100])."""
    return [set(data.y_train[plan.order[i * 100 : (i + 1) * 100]].tolist()) for i in range(data.steps_per_epoch)]


def test_class_sorted_batches_hold_at_most_two_classes_in_the_same_order_every_epoch():
    data = digits(unlabelled_order="class_sorted")
    first, second = data.plan_epoch(), data.plan_epoch()
    assert torch.equal(first.order, second.order)
    classes = unlabelled_classes(data, first)
    assert max(len(c) for c in classes) <= 2
    assert sum(len(c) == 1 for c in classes) >= 60  # 80 batches, 9 class boundaries
    labels = data.y_train[first.order]
    assert torch.equal(labels, labels.sort().values)
    # Within a class, the data set's order (what the ADGM code's per-class np.where gives).
    zeros = first.order[labels == 0]
    assert torch.equal(zeros, zeros.sort().values)


def test_fixed_order_repeats_is_shuffled_and_comes_from_the_split_seed():
    torch.manual_seed(0)
    data = digits(unlabelled_order="fixed")
    torch.manual_seed(1)
    again = digits(unlabelled_order="fixed")
    first, second = data.plan_epoch(), data.plan_epoch()
    assert torch.equal(first.order, second.order) and torch.equal(first.order, again.plan_epoch().order)
    assert torch.equal(first.order.sort().values, torch.arange(8000))  # every digit once
    assert min(len(c) for c in unlabelled_classes(data, first)) >= 6  # shuffled, not grouped by class
    assert not torch.equal(first.order, digits(unlabelled_order="fixed", split_seed=1).plan_epoch().order)


def test_shuffled_order_differs_between_epochs():
    data = digits()
    first, second = data.plan_epoch(), data.plan_epoch()
    assert not torch.equal(first.order, second.order)
    assert torch.equal(first.order.sort().values, second.order.sort().values)


def test_labelled_orders_with_the_whole_labelled_set_in_every_batch():
    # labelled_batch_size = n_labels: fixed is the ADGM code's batches (all labelled digits in the same
    # order in every batch), shuffle the SDGM code's (all of them in a fresh order at every step).
    fixed = digits(labelled_order="fixed")
    plan, later = fixed.plan_epoch(), fixed.plan_epoch()
    assert torch.equal(plan.labelled_order, later.labelled_order)
    rounds = plan.labelled_order.view(-1, 100)
    assert len(rounds) == fixed.steps_per_epoch and (rounds == rounds[0]).all()
    assert torch.equal(rounds[0].sort().values, fixed.labelled.sort().values)
    labels = fixed.batch(plan, 3).y_labelled
    assert torch.equal(labels, fixed.y_train[rounds[0]]) and not torch.equal(labels, labels.sort().values)

    shuffled = digits()
    plan, later = shuffled.plan_epoch(), shuffled.plan_epoch()
    rounds = plan.labelled_order.view(-1, 100)
    assert all(torch.equal(r.sort().values, shuffled.labelled.sort().values) for r in rounds)
    assert len({tuple(r.tolist()) for r in rounds}) == len(rounds)  # a fresh order at every step
    assert not torch.equal(plan.labelled_order, later.labelled_order)


def test_fixed_labelled_order_cycles_the_same_sequence_every_epoch():
    data = digits(labelled_order="fixed", labelled_batch_size=30)
    plan = data.plan_epoch()
    assert torch.equal(plan.labelled_order, data.plan_epoch().labelled_order)
    seen = plan.labelled_order[: data.steps_per_epoch * 30]
    assert torch.equal(seen.view(-1, 100)[:-1], seen[:100].expand(23, 100))  # one round of 100, again and again
    counts = seen.bincount()[data.labelled]
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("unlabelled_order", "sorted", "shuffle, fixed, class_sorted"),
        ("labelled_order", "class_sorted", "shuffle, fixed"),
    ],
)
def test_orders_are_validated_with_their_key(key, value, allowed):
    with pytest.raises(UserError, match=f"data.{key}: '{value}' is not allowed; choose one of {allowed}"):
        validate(compose_cfg(f"data.{key}={value}"))


@pytest.mark.parametrize(
    "unlabelled, labelled", [("shuffle", "shuffle"), ("fixed", "fixed"), ("class_sorted", "fixed")]
)
def test_a_run_resumed_mid_epoch_ends_as_an_uninterrupted_one(cli, tmp_path, unlabelled, labelled):
    run = [
        "model=m2",
        "data.n_labels=100",
        f"data.unlabelled_order={unlabelled}",
        f"data.labelled_order={labelled}",
        "model.hidden=[32]",
        "model.z_dim=4",
        "model.iw_samples=1",
        "logger=none",
        "trainer.progress_bar=false",
        "device=cpu",
        "trainer.threads=1",
    ]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli(*run, "trainer.max_steps=110", f"hydra.run.dir={whole}")[0] == 0
    assert cli(*run, "trainer.max_steps=50", f"hydra.run.dir={split}")[0] == 0  # stops mid-epoch (80 batches)
    assert checkpoint.load(split / "checkpoints" / "last.pt")["batch_in_epoch"] == 50
    assert cli(f"resume={split}", "trainer.max_steps=110")[0] == 0  # crosses into the next epoch's order
    ours, theirs = (checkpoint.load(d / "checkpoints" / "last.pt")["model"] for d in (split, whole))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
