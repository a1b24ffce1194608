"""The model behind the ADGM authors' published log (ml-lab/auxiliary-deep-generative-models,
models/adgmssl.py) as options, each pinned to its math: q(a|x) frozen at its initialisation, q(z|x,y)
without a, the KL terms in closed form, Glorot-normal Gaussian heads, and the weight prior on weights
only, added before the clipping."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_run.config import OptimizerConfig, validate
from dgm_run.contract import DataSpec
from dgm_run.errors import UserError
from dgm_run.models.semi_supervised.adgm import ADGM
from dgm_run.models.semi_supervised.labels import Labels
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.sdgm import SDGM
from dgm_run.optim import build_optimizer
from dgm_run.train import build
from tests.conftest import TINY, compose_cfg
from tests.test_fidelity_models import MNIST_SPEC, SMALL, assert_glorot_normal, batch, weights

SPEC = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)
CODE_2015 = {"p_a": "standard", "train_q_a": False, "q_z_sees_a": False, "kl": "analytic"}


def test_frozen_q_a_keeps_its_initial_weights_bit_for_bit_while_the_rest_trains(tmp_path):
    cfg = compose_cfg(
        *TINY,
        "model=adgm",
        "data.n_labels=100",
        "model.train_q_a=false",
        "model.samples=2",
        "model.mc_average=authors",
        "optimizer.weight_prior=0.01",
        "optimizer.clip_norm=5",
        "optimizer.clip_value=1",
        "logger=none",
        "trainer.max_steps=5",
    )
    trainer = build(cfg, tmp_path)
    model = trainer.model
    q_a = {id(p) for p in model.q_a.parameters()}
    assert not q_a & {id(p) for group in trainer.optimizers["elbo"].param_groups for p in group["params"]}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.fit()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed != name.startswith("q_a."), name


def test_q_z_without_a_does_not_see_a():
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, q_z_sees_a=False, **SMALL), SPEC)
    assert [part.in_features for part in model.q_z_in.example.parts] == [16]  # x only
    x, y = torch.bernoulli(torch.full((4, 16), 0.5)), torch.tensor([0, 2, 1, 2])
    mean = model.encode_z(x, y)
    with torch.no_grad():
        model.q_a[0].weight.add_(1.0)  # another q(a|x): a moves, q(z|x,y) does not
    assert torch.equal(model.encode_z(x, y), mean)
    paper = ADGM(ADGM.Config(a_dim=3, **SMALL), SPEC)
    assert [part.in_features for part in paper.q_z_in.example.parts] == [3, 16]  # [a, x]


@pytest.mark.parametrize(
    "model_class, extra",
    [(M2, {}), (ADGM, {"a_dim": 3, "p_a": "standard"}), (ADGM, {"a_dim": 3}), (SDGM, {"a_dim": 3})],
)
def test_the_closed_form_kl_has_the_monte_carlo_estimates_expectation(model_class, extra):
    """For every (digit, label) row, the mean over 40,000 draws of the bound with -KL in closed form equals
    that of the sampled log p - log q within 5 standard errors of the sampled one's mean (which the closed
    form's smaller spread makes the larger): the same expectation."""
    torch.manual_seed(0)
    model = model_class(model_class.Config(**extra, **SMALL), SPEC)
    x = torch.bernoulli(torch.full((3, 16), 0.5))
    draws = 40_000
    xr = x.repeat(draws, 1)
    labels = Labels(3, every=len(xr))
    means, spreads = [], []
    for analytic in (False, True):
        torch.manual_seed(1)
        with torch.no_grad():
            draw = [] if isinstance(model, M2) else [model.draw_a(xr)]
            log_w = model.log_weight(xr, labels, *draw, analytic_kl=analytic).view(draws, 3 * 3)
        means.append(log_w.mean(0))
        spreads.append(log_w.std(0))
    sampled, closed = means
    assert bool((spreads[1] < spreads[0]).all())  # the closed form removes the latents' sampling noise
    assert bool(((sampled - closed).abs() < 5 * spreads[0] / math.sqrt(draws)).all()), sampled - closed
    assert float((sampled - closed).abs().max()) > 0  # two estimates, not one computation


def test_the_closed_form_kl_is_the_training_bound_only():
    """model.kl=analytic changes the loss, not the importance-weighted log-likelihood of the evaluation."""
    values = {}
    for kl in ("sampled", "analytic"):
        torch.manual_seed(0)
        model = ADGM(ADGM.Config(a_dim=3, kl=kl, p_a="standard", iw_samples=3, **SMALL), SPEC)
        torch.manual_seed(1)
        loss = model.loss("elbo", batch())["labelled"]
        torch.manual_seed(2)
        values[kl] = (loss, model.log_likelihood(torch.bernoulli(torch.full((4, 16), 0.5))))
    assert not torch.equal(values["sampled"][0], values["analytic"][0])
    assert torch.equal(values["sampled"][1], values["analytic"][1])


@pytest.mark.parametrize("extra", [CODE_2015, {**CODE_2015, "samples": 3, "mc_average": "authors"}])
def test_the_2015_model_matches_the_textbook_sum(extra):
    from tests.test_semi_supervised import exact_sum_against_the_textbook

    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, **extra, **SMALL), SPEC)
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


def test_glorot_all_init_draws_the_gaussian_heads_glorot_normal_too():
    """The 2015 ADGM code: every layer Glorot-normal, the mean and log-variance heads with gain 1 (the
    SDGM code's and init=glorot's start them near zero); hidden layers as under glorot."""
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(init="glorot_all"), MNIST_SPEC)
    assert_glorot_normal(weights(model, "q_a.2.weight"), math.sqrt(2))  # a hidden layer, 500 -> 500
    for head in ("q_a.4.weight", "q_z.1.2.weight", "p_a.1.2.weight"):  # mean and log-variance, 500 -> 200
        assert_glorot_normal(weights(model, head), 1.0)
    assert_glorot_normal(weights(model, "p_x.1.2.weight"), 1.0)


# --------------------------------------------------------------------------- the weight prior
def test_weight_prior_adds_to_the_weights_gradients_only_and_before_the_clipping():
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, **SMALL), SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # weights of size 1: the prior's gradient is of the data's size
    params = list(model.parameters())
    snapshot = [p.detach().clone() for p in params]

    def seen_by_the_update(cfg: OptimizerConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The loss's gradients, and what the optimizer's update reads after its own hook, from the snapshot."""
        with torch.no_grad():
            for p, w in zip(params, snapshot):
                p.copy_(w)
        optimizer = build_optimizer(params, cfg, "elbo")
        seen = []  # registered after the optimizer's own hook
        optimizer.register_step_pre_hook(lambda opt, *_: seen.extend(p.grad.clone() for p in params))
        model.zero_grad()
        torch.manual_seed(1)
        model.loss("elbo", batch())["loss"].backward()
        raw = [p.grad.clone() for p in params]
        optimizer.step()
        return raw, seen

    raw, seen = seen_by_the_update(OptimizerConfig(weight_prior=0.5))
    for p, w, g, got in zip(params, snapshot, raw, seen):
        torch.testing.assert_close(got, g + 0.5 * w if p.dim() > 1 else g, rtol=1e-6, atol=1e-6)
    assert any(p.dim() == 1 for p in params) and any(p.dim() > 1 for p in params)
    raw, seen = seen_by_the_update(OptimizerConfig(weight_prior=0.5, clip_norm=2.0))
    with_prior = [g + 0.5 * w if w.dim() > 1 else g for g, w in zip(raw, snapshot)]
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in with_prior])))
    assert norm > 2 * 1.5  # the clipping bites, and on the sum: the prior came first
    for got, want in zip(seen, with_prior):
        torch.testing.assert_close(got, want * (2.0 / (norm + 1e-6)), rtol=1e-5, atol=1e-6)


def test_weight_prior_is_validated_with_its_key():
    with pytest.raises(UserError, match=r"optimizer.weight_prior: must be >= 0 \(got -1.0\)"):
        validate(compose_cfg("optimizer.weight_prior=-1"))
    with pytest.raises(UserError, match=r"optimizer.phases.elbo.weight_prior: must be >= 0"):
        validate(compose_cfg("+optimizer.phases.elbo.weight_prior=-1"))


def test_the_2015_code_experiment_composes_to_its_pipeline():
    cfg = validate(compose_cfg("experiment=adgm_2015_code"))
    model, data, optimizer = cfg.model, cfg.data, cfg.optimizer
    assert (model.p_a, model.train_q_a, model.q_z_sees_a, model.kl, model.init) == (
        "standard",
        False,
        False,
        "analytic",
        "glorot_all",
    )
    assert (model.alpha, model.reduction, model.samples, model.mc_average) == (1200.0, "sums", 10, "authors")
    assert (data.unlabelled_order, data.labelled_order, data.labelled_batch_size, data.n_labels) == (
        "class_sorted",
        "fixed",
        100,
        100,
    )
    assert (data.split_seed, data.labelled_draw, data.unlabelled_eval_digits) == (123456, "numpy", "last")
    assert optimizer.weight_prior == pytest.approx(1 / 120_000, rel=1e-3) and optimizer.weight_decay == 0
    shuffled = validate(compose_cfg("experiment=adgm_2015_code_shuffled"))
    assert shuffled.data.unlabelled_order == "shuffle"
    assert (shuffled.model, shuffled.optimizer) == (model, optimizer)
