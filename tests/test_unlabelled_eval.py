"""eval/unlabelled_error: the classifier scored on training digits whose labels it never saw
(data.n_unlabelled_eval), the number that shows whether the unlabelled digits' classes reach training."""

from __future__ import annotations

import json

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.config import LoggerConfig, validate
from dgm_run.data.base import DeviceData
from dgm_run.data.digits import Digits
from dgm_run.data.mnist import MNIST
from dgm_run.evaluate import Evaluator
from dgm_run.metrics import UNLABELLED
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.tensorboard import TensorBoardLogger
from tests.conftest import compose_cfg


def digits(**overrides) -> DeviceData:
    cfg = Digits.Config(**{"n_labels": 100, **overrides})
    return DeviceData(Digits(cfg).load(), cfg, batch_size=100, device=torch.device("cpu"))


def image_keys(x: torch.Tensor) -> list[bytes]:
    return [row.tobytes() for row in x.flatten(1).numpy()]


def test_the_unlabelled_evaluation_digits_are_training_digits_never_labelled():
    torch.manual_seed(0)
    data = digits(n_unlabelled_eval=3000, test_binarize="grey", n_validation=1000)
    index = data.unlabelled_eval_index
    assert len(index) == 3000 and len(set(index.tolist())) == 3000
    assert set(index.tolist()).isdisjoint(data.labelled.tolist())
    x, y = data.eval_sets()[UNLABELLED]
    # The very training digits at those indices (grey levels here), with their labels...
    assert torch.equal(x, data.x_train[index].float() / 255) and torch.equal(y, data.y_train[index])
    # ...and not one of them is a labelled digit (compared by content), nor a validation digit.
    labelled = set(image_keys(data.x_train[data.labelled]))
    assert labelled.isdisjoint(image_keys(data.x_train[index]))
    assert set(image_keys((x * 255).round().to(torch.uint8))).isdisjoint(
        image_keys((data.x_valid * 255).round().to(torch.uint8))
    )
    # Fixed by the split seed, whatever the global RNG.
    torch.manual_seed(1)
    assert torch.equal(
        digits(n_unlabelled_eval=3000, test_binarize="grey", n_validation=1000).unlabelled_eval_index, index
    )
    assert not torch.equal(digits(n_unlabelled_eval=3000, split_seed=1).unlabelled_eval_index, index)


def test_last_takes_the_training_sets_last_digits_less_the_labelled_ones():
    data = digits(n_unlabelled_eval=3000, unlabelled_eval_digits="last")
    last = set(range(8000 - 3000, 8000))
    labelled = set(data.labelled.tolist())
    assert 0 < len(labelled & last) < 100  # some labelled digits fall in the window, and are left out
    assert data.unlabelled_eval_index.tolist() == sorted(last - labelled)


def test_the_2015_pipeline_scores_mnist_pkl_gz_validation_digits(mnist_root):
    cfg = validate(compose_cfg("experiment=adgm_2015_code", f"data.root={mnist_root}")).data
    data = DeviceData(MNIST(cfg).load(), cfg, batch_size=100, device=torch.device("cpu"))
    # mnist.pkl.gz's validation part is MNIST's training digits 50,000 to 59,999, which the ADGM code trains
    # on (train_valid_combine=True) and scores as "valid".
    labelled = set(data.labelled.tolist())
    assert data.unlabelled_eval_index.tolist() == sorted(set(range(50_000, 60_000)) - labelled)
    assert len(data.unlabelled_eval_index) == 10_000 - 13  # the README's count of labelled digits among them
    assert len(labelled) == 100 and data.y_train[data.labelled].bincount().tolist() == [10] * 10


def test_at_most_the_unlabelled_digits_and_none_without_labels():
    assert len(digits().unlabelled_eval_index) == 7900  # the 8,000 embedded training digits less 100 labels
    assert UNLABELLED not in digits(n_unlabelled_eval=0).eval_sets()
    assert UNLABELLED not in digits(n_labels=None).eval_sets()


def test_the_evaluator_scores_only_the_classifier_on_them(tmp_path):
    data = digits(n_unlabelled_eval=400)
    torch.manual_seed(0)
    model = M2(M2.Config(hidden=[16], z_dim=4, iw_samples=2), data.spec)
    model.eval()
    evaluator = Evaluator(
        model,
        data,
        TensorBoardLogger(tmp_path, enabled=False),
        LoggerConfig(),
        seed=0,
        batch_size=150,
        autocast=torch.autocast("cpu", enabled=False),
    )
    x, y = data.eval_sets()[UNLABELLED]
    metrics = evaluator.average_metrics(UNLABELLED, x, y)
    assert set(metrics) == {"eval/unlabelled_error", "eval/unlabelled_accuracy"}
    wrong = (model.predict(x).argmax(-1) != y).float().mean()
    assert abs(metrics["eval/unlabelled_error"] - float(wrong)) < 1e-6


def test_a_run_logs_the_unlabelled_error_beside_the_test_error(cli, tmp_path):
    run = [
        "model=m2",
        "data.n_labels=100",
        "data.n_unlabelled_eval=500",
        "model.hidden=[32]",
        "model.z_dim=4",
        "model.iw_samples=1",
        "trainer.max_steps=20",
        "trainer.progress_bar=false",
        "logger.images=0",
        "device=cpu",
        f"hydra.run.dir={tmp_path}",
    ]
    assert cli(*run)[0] == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["eval/unlabelled_error"] < 1
    assert abs(metrics["eval/unlabelled_error"] + metrics["eval/unlabelled_accuracy"] - 1) < 1e-6
    assert "eval/unlabelled_log_likelihood" not in metrics and "eval/log_likelihood" in metrics
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/unlabelled_error")] == [20]
