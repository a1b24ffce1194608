"""The KL warm-up (model.kl_warmup_epochs) of the VAE family: the logged weight rises linearly and then
stays 1; it multiplies the KL part only; with 0 the losses are those without the option."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.contract import Batch, DataSpec, Progress
from dgm_run.models.avb.avb import AVB
from dgm_run.models.base import ScheduleEntry
from dgm_run.models.semi_supervised.adgm import ADGM
from dgm_run.models.semi_supervised.m1m2 import M1M2
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.sdgm import SDGM
from dgm_run.models.vae.beta_vae import BetaVAE
from dgm_run.models.vae.vae import VAE
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg
from tests.test_semi_supervised import prototypes_cfg

SPEC = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)
SMALL = {"z_dim": 2, "hidden": [8]}
# Every VAE-family model and phase whose loss has a KL term: (name, class, config fields, phase).
MODELS = [
    ("vae", VAE, {}, "elbo"),
    ("beta_vae", BetaVAE, {"beta": 3.0}, "elbo"),
    ("m2", M2, {}, "elbo"),
    ("m2-gumbel", M2, {"marginalize": "gumbel"}, "elbo"),
    ("adgm", ADGM, {"a_dim": 3}, "elbo"),
    ("sdgm", SDGM, {"a_dim": 3}, "elbo"),
    ("m1m2-m1", M1M2, {"m1_hidden": [8], "m1_z_dim": 3}, "m1"),
    ("m1m2-m2", M1M2, {"m1_hidden": [8], "m1_z_dim": 3}, "m2"),
    ("avb", AVB, {"adaptive_contrast": True, "ac_samples": 3, "noise_dim": 3, "discriminator_hidden": [8]}, "primal"),
    ("avb_vae", AVB, {"encoder": "gaussian"}, "primal"),
]


def batch_at(epoch: float | None) -> Batch:
    """A fixed semi-supervised batch, with training at `epoch` (None: outside training)."""
    g = torch.Generator().manual_seed(5)
    batch = Batch(
        x=torch.bernoulli(torch.full((6, 1, 4, 4), 0.4), generator=g),
        x_labelled=torch.bernoulli(torch.full((3, 1, 4, 4), 0.4), generator=g),
        y_labelled=torch.tensor([0, 1, 2]),
    )
    if epoch is not None:
        batch.progress = Progress()
        batch.progress.update(round(epoch * 10), steps_per_epoch=10, total_steps=100)
    return batch


def losses(model_class, fields: dict, phase: str, epoch: float | None, **options) -> dict[str, torch.Tensor]:
    """The loss terms of a model built from seed 0 on the fixed batch, its draws from seed 1."""
    torch.manual_seed(0)
    model = model_class(model_class.Config(**SMALL, **fields, **options), SPEC)
    torch.manual_seed(1)
    with torch.no_grad():
        return model.loss(phase, batch_at(epoch))


@pytest.mark.parametrize("name,model_class,fields,phase", MODELS, ids=[m[0] for m in MODELS])
def test_with_zero_warmup_epochs_the_losses_are_those_without_the_option(name, model_class, fields, phase):
    without = losses(model_class, fields, phase, epoch=None)
    for epoch in (None, 0.0, 2.5):
        with_zero = losses(model_class, fields, phase, epoch, kl_warmup_epochs=0)
        assert list(with_zero) == list(without) and "kl_weight" not in with_zero
        for term in without:
            assert torch.equal(with_zero[term], without[term]), term


@pytest.mark.parametrize("name,model_class,fields,phase", MODELS, ids=[m[0] for m in MODELS])
def test_warmup_weights_the_kl_part_linearly_and_is_the_plain_loss_at_one(name, model_class, fields, phase):
    """With the same draws, the loss is affine in the weight (it multiplies the KL part only), its KL part
    is not zero, and at weight 1 (after the warm-up, or outside training) it is the loss without warm-up."""
    plain = losses(model_class, fields, phase, epoch=None)
    # M1+M2's M2 starts its warm-up at the first epoch of its phase: give it phases from epoch 0.
    schedule = {"schedule": [ScheduleEntry("m1"), ScheduleEntry("m2")]} if model_class is M1M2 else {}
    at = {
        epoch: losses(model_class, {**fields, **schedule}, phase, epoch, kl_warmup_epochs=2)
        for epoch in (0.0, 0.5, 1.0, 2.0, 3.0, None)
    }
    assert [float(at[e]["kl_weight"]) for e in at] == [0.0, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert list(at[1.0]) == [*plain, "kl_weight"]
    loss = {e: at[e]["loss"] for e in at}
    torch.testing.assert_close(loss[1.0], (loss[0.0] + loss[2.0]) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss[0.5], (3 * loss[0.0] + loss[2.0]) / 4, rtol=1e-5, atol=1e-5)
    assert abs(loss[2.0] - loss[0.0]) > 1e-3
    for epoch in (2.0, 3.0, None):
        for term in plain:
            torch.testing.assert_close(at[epoch][term], plain[term], rtol=1e-6, atol=1e-5)
    if "recon" in plain:  # the VAE's and AVB's terms: loss = recon + beta * weight * kl
        kl = next(term for term in plain if term.startswith("kl"))
        torch.testing.assert_close(loss[0.5], at[0.5]["recon"] + fields.get("beta", 1.0) * 0.25 * at[0.5][kl])


def test_m1m2_warms_each_part_up_from_the_start_of_its_phase():
    """The default schedule trains M1 for m1_epochs, then M2: M2's warm-up starts when M2 does."""
    model = M1M2(
        M1M2.Config(
            **SMALL,
            m1_hidden=[8],
            m1_z_dim=3,
            m1_epochs=4,
            kl_warmup_epochs=2,
            schedule=[ScheduleEntry("m1", 1, 0, 4), ScheduleEntry("m2", 1, 4)],
        ),
        SPEC,
    )
    for epoch, m1_weight, m2_weight in ((1.0, 0.5, 0.0), (4.0, 1.0, 0.0), (5.0, 1.0, 0.5), (7.0, 1.0, 1.0)):
        batch = batch_at(epoch)
        assert float(model.m1.kl_weight(batch, torch.device("cpu"))) == m1_weight
        assert float(model.m2.kl_weight(batch, torch.device("cpu"))) == m2_weight


def read_scalars(run_dir, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.parametrize("model", ["vae", "m2"])
def test_logged_kl_weight_rises_linearly_over_the_warmup_epochs_then_stays_one(tmp_path, model):
    """A real run, every step logged: the weight of the step that ends at logged step s is the
    fraction of the warm-up done when it started, (s - 1) / (steps per epoch * kl_warmup_epochs), then 1."""
    if model == "vae":  # 8 steps per epoch of the embedded digits
        cfg = compose_cfg(
            *TINY,
            "trainer.max_steps=null",
            "trainer.batch_size=1000",
            "trainer.max_epochs=4",
            "trainer.log_every_steps=1",
            "model.kl_warmup_epochs=2.5",
            "logger.images=0",
        )
    else:  # 16 steps per epoch of the prototypes
        cfg = prototypes_cfg(
            "m2",
            "trainer.max_epochs=4",
            "trainer.eval_every_epochs=4",
            "trainer.log_every_steps=1",
            "model.kl_warmup_epochs=2.5",
            "logger.embedding=0",
        )
    metrics = run(cfg, tmp_path)
    steps_per_epoch = metrics["step"] // metrics["epoch"]
    weights = read_scalars(tmp_path, "train/elbo/kl_weight")
    assert sorted(weights) == list(range(1, metrics["step"] + 1))
    warmup_steps = 2.5 * steps_per_epoch
    for step, weight in weights.items():
        assert weight == pytest.approx(min((step - 1) / warmup_steps, 1.0), abs=1e-6), step
    assert weights[metrics["step"]] == 1.0 and 0 < weights[steps_per_epoch] < 0.5
