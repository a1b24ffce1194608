"""AVB: the discriminator's optimum, the two phases' separation in the trainer, the toy run's
figure and metrics, the log-likelihood estimator, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.data.base import DataSpec
from dgm_run.errors import UserError
from dgm_run.models.avb.avb import AVB
from dgm_run.models.nn import normal_log_prob, standard_normal_log_prob
from dgm_run.train import run
from tests.conftest import compose_cfg
from tests.test_trainer import build_trainer, optimizer_steps_per_phase

TOY = DataSpec(shape=(4,), n_classes=4, is_image=False, n_train=100)
# A few seconds of the toy on a CPU.
TINY_TOY = [
    "model.hidden=[16]",
    "model.noise_dim=8",
    "model.discriminator_hidden=[32]",
    "model.discriminator_features=8",
    "model.iw_samples=50",
    "data.n_train=256",
    "trainer.batch_size=64",
    "trainer.max_epochs=2",
    "trainer.eval_every_epochs=1",
    "trainer.log_every_steps=2",
    "trainer.progress_bar=false",
    "device=cpu",
]


@pytest.mark.parametrize("discriminator", ["inner_product", "mlp"])
def test_discriminator_learns_log_q_minus_log_p(discriminator):
    """Proposition 1: the logistic loss's optimum is T*(x, z) = log q(z|x) - log p(z). Trained on
    q = N(m, s^2) against p = N(0, I) at a fixed x, T must match that log-ratio in the bulk of both."""
    torch.manual_seed(0)
    model = AVB(
        AVB.Config(z_dim=2, discriminator=discriminator, discriminator_hidden=[32, 32], discriminator_features=16), TOY
    )
    optimizer = torch.optim.Adam(model.phase_parameters("adversary"), lr=1e-2)
    # A tenth of the rate for the last third: less noise from the finite batches around the optimum.
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=400, gamma=0.1)
    m, s = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 0.8])
    x = torch.eye(4)[:1].expand(1024, 4)
    for _ in range(600):
        optimizer.zero_grad()
        model.adversary_loss(x, m + s * torch.randn(1024, 2))["loss"].backward()
        optimizer.step()
        schedule.step()
    # Points where both densities are high: within 1.5 standard deviations of q's mean and of the origin.
    grid = torch.cartesian_prod(torch.linspace(-2, 2, 41), torch.linspace(-2, 2, 41))
    bulk = grid[(((grid - m) / s).norm(dim=1) < 1.5) & (grid.norm(dim=1) < 1.5)]
    assert len(bulk) > 100
    with torch.no_grad():
        t = model.discriminator(x[:1].expand(len(bulk), 4), bulk)
    log_ratio = normal_log_prob(bulk, m, 2 * s.log()) - standard_normal_log_prob(bulk)
    error = (t - log_ratio).abs()
    # The log-ratio spans 2 nats there (0.41 mean absolute deviation from its mean, the error
    # of the best constant); seeds 0 and 1 reach 0.02-0.04 mean and 0.07-0.17 max error.
    assert log_ratio.max() - log_ratio.min() > 1.5
    assert error.mean() < 0.1 and error.max() < 0.3, (error.mean(), error.max())


@pytest.mark.parametrize("adaptive_contrast", [False, True], ids=["plain", "adaptive-contrast"])
def test_phases_step_as_scheduled_and_only_their_own_parameters(tmp_path, adaptive_contrast):
    cfg = compose_cfg(
        "experiment=avb_toy",
        *TINY_TOY,
        "logger=none",
        f"model.adaptive_contrast={adaptive_contrast}",
        "model.ac_samples=4",
    )
    trainer = build_trainer(cfg, tmp_path)
    model = trainer.model
    assert optimizer_steps_per_phase(trainer, 3) == {"adversary": 6, "primal": 3}

    batch = trainer.data.batch(trainer.data.plan_epoch(), 0)
    adversary = {id(p) for p in model.phase_parameters("adversary")}
    primal = {id(p) for p in model.phase_parameters("primal")}
    assert adversary and primal and not adversary & primal
    assert adversary | primal == {id(p) for p in model.parameters()}
    for phase, own in (("adversary", adversary), ("primal", primal)):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        model.loss(phase, batch)["loss"].backward()
        for name, p in model.named_parameters():
            # Every parameter of the phase gets a gradient, no other parameter any...
            assert (p.grad is not None) == (id(p) in own), (phase, name)
        trainer.optimizers[phase].step()
        for name, p in model.named_parameters():
            # ...and the phase's step moves its own parameters only.
            assert (not torch.equal(before[name], p.detach())) == (id(p) in own), (phase, name)


@pytest.mark.parametrize("experiment", ["avb_toy", "avb_toy_vae"])
def test_toy_run_logs_latent_figure_and_metrics(tmp_path, experiment):
    metrics = run(compose_cfg(f"experiment={experiment}", *TINY_TOY), tmp_path)
    # log p(x) of a one-hot point is at most 0 (and -log 4 at best for the model as a whole); the
    # estimate of a barely trained model lies below that, but far from a broken estimator's -inf.
    assert -10 < metrics["eval/log_likelihood"] < 0
    # The implicit encoder's ELBO goes through the discriminator's estimate of the KL, which can make it exceed
    # the log-likelihood: it is no bound, and is not named one. The Gaussian encoder's is a true ELBO.
    elbo, other = (
        ("eval/elbo_estimate", "eval/elbo") if experiment == "avb_toy" else ("eval/elbo", "eval/elbo_estimate")
    )
    assert 0 <= metrics["eval/recon_error"] <= 1 and math.isfinite(metrics[elbo]) and other not in metrics
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    latent = events.Images("latent")
    assert [e.step for e in latent] == [4, 8]  # 4 batches per epoch, evaluated after each epoch
    assert latent[-1].width > 100 and latent[-1].height > 100
    assert {"eval/log_likelihood", "eval/recon_error", "train/primal/recon", "train/primal/kl"} <= set(
        events.Tags()["scalars"]
    )
    if experiment == "avb_toy":
        assert {"train/adversary/loss", "train/adversary/t_q", "train/adversary/t_p"} <= set(events.Tags()["scalars"])


def test_log_likelihood_estimate_is_exact_for_a_decoder_that_ignores_z():
    """With p(x|z) = p(x) for every z, every importance weight is p(x) p(z) / pi(z): the
    estimate is right only if the proposal's density pi is normalised and evaluated correctly."""
    torch.manual_seed(0)
    model = AVB(AVB.Config(iw_samples=20_000), TOY)
    last = model.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0]))
    x = torch.eye(4)
    exact = -torch.nn.functional.binary_cross_entropy_with_logits(last.bias.expand(4, 4), x, reduction="none").sum(1)
    # A proposal far from the prior, so that a wrong density would show.
    mu, logvar = torch.tensor([[1.0, -1.0]]).expand(4, 2), torch.full((4, 2), math.log(0.3))
    torch.testing.assert_close(model.log_likelihood(x, mu, logvar), exact, atol=0.03, rtol=0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.discriminator=cnn", r"model.discriminator: 'cnn' is not allowed; choose one of inner_product, mlp"),
        ("model.ac_samples=1", r"model.ac_samples: must be >= 2"),
        (
            "model.encoder=gaussian",
            r"model.schedule\[0\].phase: AVB \(encoder=gaussian\) has nothing to train in phase "
            r"'adversary'; schedule only: primal",
        ),
        ("model.hidden=[]", r"model.hidden: must be one or more positive layer sizes"),
        (
            "model.schedule=[{phase: primal, steps: 1}]",
            r"model.schedule: AVB \(encoder=implicit\) needs the phases adversary, primal \(got primal\)",
        ),
        ("model.z_dim=0", r"model.z_dim: must be a positive integer"),
    ],
)
def test_bad_config_values_are_user_errors(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        run(compose_cfg("experiment=avb_toy", *TINY_TOY, override), tmp_path)


def test_gaussian_likelihood_fits_continuous_2d_data_and_bernoulli_refuses_it():
    """The decoder's likelihood is the toolkit's head: a Gaussian one models a 2-D toy's points."""
    spec = DataSpec(shape=(2,), n_classes=8, is_image=False, n_train=100, unit_interval=False)
    with pytest.raises(UserError, match="model=avb has a Bernoulli likelihood"):
        AVB(AVB.Config(), spec)
    torch.manual_seed(0)
    model = AVB(
        AVB.Config(
            likelihood="gaussian", hidden=[16], noise_dim=4, discriminator_hidden=[16], iw_samples=20, ac_samples=4
        ),
        spec,
    )
    assert model.decoder[-1].out_features == 4  # a mean and a log-variance per coordinate
    from dgm_run.data.base import Batch

    x = torch.randn(16, 2)
    for phase in ("adversary", "primal"):
        assert torch.isfinite(model.loss(phase, Batch(x=x))["loss"])
    metrics = model.evaluate(x, torch.zeros(16, dtype=torch.long))
    assert all(torch.isfinite(v).all() for v in metrics.values())
