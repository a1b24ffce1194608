"""DDGM: the entropy from batch-norm scales, the two phases' separation, the conv nets' shapes,
the mixture and spiral metrics, and a short run on the 8-mode mixture with its figures."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.data.base import Batch, DataSpec
from dgm_run.data.toy import GMM2D, Spiral2D
from dgm_run.errors import UserError
from dgm_run.models.ddgm.ddgm import DDGM
from dgm_run.train import run
from tests.conftest import compose_cfg
from tests.test_trainer import build_trainer

MODES = GMM2D(GMM2D.Config()).modes()
SPEC_2D = DataSpec(shape=(2,), n_classes=8, is_image=False, n_train=100, modes=MODES, mode_std=0.02)
SMALL = dict(z_dim=3, generator_hidden=[16, 12], energy_hidden=[16], features=8, experts=6)


def energy_parameters(model: DDGM) -> list[torch.nn.Parameter]:
    return model.phase_parameters("energy")


def test_entropy_is_the_gaussian_entropy_of_the_batch_norm_scales_and_has_their_gradient():
    torch.manual_seed(0)
    model = DDGM(DDGM.Config(**SMALL), SPEC_2D)
    scales = [m.weight for m in model.generator if isinstance(m, torch.nn.BatchNorm1d)]
    assert [len(s) for s in scales] == [16, 12]
    with torch.no_grad():
        scales[0].fill_(2.0)
        scales[1].fill_(0.5)
    expected = 16 * 0.5 * math.log(2 * math.pi * math.e * 4) + 12 * 0.5 * math.log(2 * math.pi * math.e * 0.25)
    entropy = model.entropy()
    assert entropy.item() == pytest.approx(expected, rel=1e-5)
    entropy.backward()
    torch.testing.assert_close(scales[0].grad, torch.full((16,), 0.5))  # d/dgamma ½ log gamma² = 1 / gamma
    torch.testing.assert_close(scales[1].grad, torch.full((12,), 2.0))


@pytest.mark.parametrize("count", ["units", "scales"])
def test_conv_entropy_counts_each_scale_per_position_or_once(count):
    """28 x 28 digits, 2 channels: a 7 x 7 map of 4 channels, then a 14 x 14 map of 2. units counts a
    channel's scale once per position of its map (49 and 196 times), scales once (the authors' code)."""
    torch.manual_seed(0)
    spec = DataSpec(shape=(1, 28, 28), n_classes=1, is_image=True, n_train=10)
    model = DDGM(DDGM.Config(network="conv", channels=2, z_dim=3, features=4, experts=4, entropy_count=count), spec)
    scales = [m.weight for m in model.generator if isinstance(m, torch.nn.BatchNorm2d)]
    assert [len(s) for s in scales] == [4, 2]
    with torch.no_grad():
        scales[0].fill_(2.0)
        scales[1].fill_(0.5)
    times = [49, 196] if count == "units" else [1, 1]
    expected = times[0] * 4 * 0.5 * math.log(2 * math.pi * math.e * 4) + times[1] * 2 * 0.5 * math.log(
        2 * math.pi * math.e * 0.25
    )
    entropy = model.entropy()
    assert entropy.item() == pytest.approx(expected, rel=1e-6)
    entropy.backward()
    torch.testing.assert_close(scales[0].grad, torch.full((4,), times[0] / 2.0))  # d/dgamma ½ log gamma² = 1 / gamma
    torch.testing.assert_close(scales[1].grad, torch.full((2,), times[1] / 0.5))
    # In an MLP every unit has its own scale: both counts are the same.
    mlp = {c: DDGM(DDGM.Config(**SMALL, entropy_count=c), SPEC_2D) for c in ("units", "scales")}
    mlp["scales"].load_state_dict(mlp["units"].state_dict())
    assert torch.equal(mlp["units"].entropy(), mlp["scales"].entropy())


def test_each_phase_loss_leaves_gradients_only_on_its_own_parameters():
    torch.manual_seed(0)
    model = DDGM(DDGM.Config(**SMALL), SPEC_2D)
    batch = Batch(x=torch.randn(32, 2))
    generator, energy = list(model.generator.parameters()), energy_parameters(model)
    assert {id(p) for p in generator}.isdisjoint(id(p) for p in energy)
    assert len(generator) + len(energy) == len(list(model.parameters()))

    terms = model.loss("generator", batch)
    assert set(terms) == {"loss", "energy_samples", "entropy"}
    torch.testing.assert_close(terms["loss"], terms["energy_samples"] - terms["entropy"])
    terms["loss"].backward()
    assert all(p.grad is None for p in energy)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator)
    assert all(p.requires_grad for p in energy)  # frozen() gave them back

    model.zero_grad(set_to_none=True)
    terms = model.loss("energy", batch)
    assert set(terms) == {"loss", "energy_data", "energy_samples"}
    torch.testing.assert_close(terms["loss"], terms["energy_data"] - terms["energy_samples"])
    terms["loss"].backward()
    assert all(p.grad is None for p in generator)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in energy)


def test_energy_l2_adds_the_squared_learned_energy_to_the_energy_loss_only():
    torch.manual_seed(0)
    model = DDGM(DDGM.Config(**SMALL, energy_l2=0.1, sigma=2.0), SPEC_2D)
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    terms = model.loss("energy", Batch(x=x))
    torch.manual_seed(1)
    samples = model.generate(32)
    both = torch.cat([x, samples])
    learned = model.energy(both) - both.pow(2).sum(1) / 4.0
    torch.testing.assert_close(terms["energy_penalty"], learned.pow(2).mean())
    torch.testing.assert_close(
        terms["loss"], terms["energy_data"] - terms["energy_samples"] + 0.1 * terms["energy_penalty"]
    )
    terms["loss"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert set(model.loss("generator", Batch(x=x))) == {"loss", "energy_samples", "entropy"}


def test_trainer_steps_of_each_phase_change_only_its_own_parameters(tmp_path):
    cfg = compose_cfg(
        "model=ddgm",
        "data=gmm2d",
        "data.n_train=500",
        "data.n_test=100",
        "model.z_dim=3",
        "model.generator_hidden=[16]",
        "model.energy_hidden=[16]",
        "model.features=8",
        "model.experts=8",
        "trainer.max_steps=1",
        "logger=none",
        "device=cpu",
    )
    trainer = build_trainer(cfg, tmp_path)
    model, batch = trainer.model, trainer.data.batch(trainer.data.plan_epoch(), 0)
    assert set(trainer.optimizers) == {"energy", "generator"}
    for phase in trainer.optimizers:
        own = {id(p) for p in model.phase_parameters(phase)}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.scheduled_step.run_phases([phase], batch)
        for name, p in model.named_parameters():
            assert (not torch.equal(before[name], p.detach())) == (id(p) in own), (phase, name)


@pytest.mark.parametrize("shape,units", [((1, 28, 28), [49, 196]), ((3, 64, 64), [16, 64, 256, 1024])])
def test_conv_variant_samples_and_scores_images(shape, units):
    torch.manual_seed(0)
    spec = DataSpec(shape=shape, n_classes=1, is_image=True, n_train=10)
    model = DDGM(DDGM.Config(network="conv", channels=4, z_dim=8, features=8, experts=8), spec)
    assert model.units_per_scale == units  # batch-norm units per scale: H x W of each feature map
    samples = model.sample(5)
    assert samples.shape == (5, *shape) and 0 <= samples.min() and samples.max() <= 1
    assert model.energy(samples).shape == (5,)
    for phase in model.phases:
        assert torch.isfinite(model.loss(phase, Batch(x=torch.rand(5, *shape)))["loss"])


def test_conv_variant_rejects_images_it_cannot_halve():
    with pytest.raises(UserError, match="model.network=conv needs an image side that halves down to at most 7"):
        DDGM(DDGM.Config(network="conv"), DataSpec(shape=(1, 27, 27), n_classes=1, is_image=True, n_train=10))
    with pytest.raises(UserError, match="model.network=conv needs square images"):
        DDGM(DDGM.Config(network="conv"), SPEC_2D)


def test_mode_metrics_count_modes_with_enough_close_samples():
    model = DDGM(DDGM.Config(**SMALL), SPEC_2D)
    # 30 samples on each of modes 0-2, 10 on mode 3 (below the 20 needed), 50 far from every mode.
    counts = [30, 30, 30, 10]
    on_modes = torch.cat([MODES[i] + 0.01 * torch.randn(c, 2) for i, c in enumerate(counts)])
    metrics = model.mode_metrics(torch.cat([on_modes, torch.zeros(50, 2)]))
    assert int(metrics["modes_covered"]) == 3
    assert float(metrics["high_quality"]) == pytest.approx(100 / 150)


def test_closeness_metrics_score_data_high_and_a_collapsed_generator_low():
    splits = Spiral2D(Spiral2D.Config(n_train=2000, n_test=2000)).load()
    x = splits.x_test
    fresh = DDGM.closeness_metrics(x, splits.x_train[:1000])
    assert fresh["near_data"] > 0.95 and fresh["data_covered"] > 0.95
    # Every sample on one test point: close to the data, but covering almost none of it.
    collapsed = DDGM.closeness_metrics(x, x[:1].expand(1000, 2))
    assert collapsed["near_data"] == 1.0 and collapsed["data_covered"] < 0.05
    blurred = DDGM.closeness_metrics(x, splits.x_train[:1000] + 0.3 * torch.randn(1000, 2))
    assert blurred["near_data"] < 0.5


def test_short_gmm_run_covers_modes_and_logs_figures(tmp_path):
    # 1,000 steps (about 10 s) on 8 modes of std 0.1; the energy at the generator's learning rate.
    cfg = compose_cfg(
        "experiment=ddgm_gmm",
        "data.std=0.1",
        "data.n_train=10000",
        "data.n_test=1000",
        "trainer.max_epochs=10",
        "trainer.eval_every_epochs=10",
        "trainer.log_every_steps=50",
        "optimizer.lr_decay=1.0",
        "optimizer.phases.energy.lr=1e-3",
        "trainer.progress_bar=false",
        "device=cpu",
    )
    metrics = run(cfg, tmp_path)
    untrained = DDGM(DDGM.Config(**SMALL), SPEC_2D).evaluate_all(torch.zeros(1, 2), torch.zeros(1))
    assert untrained["modes_covered"] == 0
    assert metrics["eval/modes_covered"] >= 6  # 8 on this seed
    assert metrics["eval/high_quality"] > 0.25  # 0.49 on this seed
    assert metrics["eval/energy_data"] < metrics["eval/energy_samples"]  # data sits lower than samples
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert {"samples", "energy"} <= set(events.Tags()["images"])
    assert {
        "train/energy/energy_data",
        "train/energy/energy_samples",
        "train/generator/energy_samples",
        "train/generator/entropy",
        "eval/modes_covered",
        "eval/high_quality",
    } <= set(events.Tags()["scalars"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.sigma=0", r"model.sigma: must be > 0 \(got 0"),
        ("model.network=resnet", r"model.network: 'resnet' is not allowed; choose one of mlp, conv"),
        ("model.generator_hidden=[]", r"model.generator_hidden: must be a non-empty list"),
        ("model.entropy_weight=-1", r"model.entropy_weight: must be >= 0"),
        ("model.entropy_count=pixels", r"model.entropy_count: 'pixels' is not allowed; choose one of units, scales"),
        ("model.energy_l2=-1", r"model.energy_l2: must be >= 0"),
        ("model.mode_min_samples=0", r"model.mode_min_samples: must be a positive integer"),
        ("+model.sigmaa=1", r"model: unknown key 'sigmaa'"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        run(compose_cfg("experiment=ddgm_gmm", "logger=none", "device=cpu", override), tmp_path)
