"""Sample quality (FID, precision, recall) in the shipped digit classifier's feature space, on the embedded
digits (MNIST test digits, which the classifier never trained on) and real runs."""

from __future__ import annotations

import pytest
import torch

from dgm_run.data.digits import Digits
from dgm_run.errors import UserError
from dgm_run.sample_quality import SampleQuality, coverage, load_classifier, radii
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    splits = Digits(Digits.Config()).load()
    return splits.x_test.float() / 255, splits.y_test


def test_the_shipped_classifier_recognises_held_out_digits(digits):
    x, y = digits
    net = load_classifier(torch.device("cpu"))
    assert float((net(x).argmax(1) == y).float().mean()) > 0.97


def test_real_digits_score_well_against_real_digits_and_noise_badly(digits):
    x, _ = digits
    quality = SampleQuality(x[0::2])  # interleaved halves: MNIST's test set is ordered by writer group
    same = quality(x[1::2])
    noise = quality(torch.rand(x[1::2].shape, generator=torch.Generator().manual_seed(0)))
    assert same["fid"] < 10 < 300 < noise["fid"]
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    # Noise collapses to one point of the feature space, inside the wide ball of an odd real digit: its
    # precision is high (the metric's known blind spot for collapsed samples), its recall nil.
    assert noise["recall"] < 0.01


def test_precision_and_recall_are_shares_inside_the_other_sets_balls():
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Each real point's 3rd nearest other point is the opposite corner, sqrt(2) away.
    assert torch.allclose(radii(real), torch.full((4,), 2**0.5))
    fake = torch.tensor([[0.5, 0.5], [3.0, 3.0]])
    assert float(coverage(fake, real, radii(real))) == 0.5


def test_a_trained_vae_samples_far_better_digits_than_an_untrained_one(tmp_path):
    common = [*TINY, "trainer.max_steps=null", "logger=none", "trainer.eval_fid_samples=1000", "model.iw_samples=1"]
    untrained = run(compose_cfg(*common, "trainer.max_steps=1"), tmp_path / "untrained")
    trained = run(
        compose_cfg(*common, "trainer.max_epochs=6", "model.hidden=[256]", "model.z_dim=16"), tmp_path / "trained"
    )
    assert trained["eval/fid"] < untrained["eval/fid"] / 2
    assert trained["eval/precision"] > untrained["eval/precision"]


def test_models_without_digit_samples_report_no_sample_quality(tmp_path):
    metrics = run(
        compose_cfg(
            "model=ddgm",
            "data=gmm2d",
            "data.n_train=500",
            "data.n_test=100",
            "logger=none",
            "trainer.max_steps=5",
            "trainer.progress_bar=false",
            "device=cpu",
            "model.generator_hidden=[8]",
            "model.energy_hidden=[8]",
        ),
        tmp_path,
    )
    assert "eval/energy_samples" in metrics  # it did evaluate its samples
    assert not any(key in metrics for key in ("eval/fid", "eval/precision", "eval/recall"))


def test_missing_classifier_weights_are_one_line(monkeypatch, digits):
    monkeypatch.setattr("dgm_run.sample_quality.WEIGHTS", "absent.pt")
    with pytest.raises(UserError, match=r"the digit classifier's weights are missing .*trainer.eval_fid_samples=0"):
        SampleQuality(digits[0][:10])
