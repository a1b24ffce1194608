"""The authors' recipes as options (issue 13), each pinned to its math on CPU: gradient clipping, the
initialisation schemes, ADGM's standard prior on a, the authors' averaging of Monte Carlo draws, and
M2's objective on sums."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dgm_run.config import OptimizerConfig
from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.nn import kl_standard_normal, normal_log_prob, standard_normal_log_prob
from dgm_run.models.semi_supervised import adgm as adgm_module
from dgm_run.models.semi_supervised import auxiliary as auxiliary_module
from dgm_run.models.semi_supervised.adgm import ADGM
from dgm_run.models.semi_supervised.labels import Labels
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.sdgm import SDGM
from dgm_run.optim import build_optimizer

SPEC = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)
MNIST_SPEC = DataSpec(shape=(1, 28, 28), n_classes=10, is_image=True, n_train=50_000, n_labels=100)
SMALL = {"z_dim": 2, "hidden": [8, 6]}


def batch(n_u: int = 5, y_l: tuple[int, ...] = (0, 2, 1, 2), side: int = 4) -> Batch:
    return Batch(
        x=torch.bernoulli(torch.full((n_u, 1, side, side), 0.4)),
        x_labelled=torch.bernoulli(torch.full((len(y_l), 1, side, side), 0.6)),
        y_labelled=torch.tensor(y_l),
    )


# --------------------------------------------------------------------------- gradient clipping
def test_clipping_bounds_the_gradients_the_optimizer_steps_with():
    """Total norm scaled down to clip_norm, then every element clamped to +-clip_value, in that order (the
    ADGM/SDGM authors' code), in place on what the optimizer's step reads."""
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, **SMALL), SPEC)
    optimizer = build_optimizer(list(model.parameters()), OptimizerConfig(clip_norm=0.5, clip_value=0.05), "elbo")
    seen = []  # registered after the clipping hook: it sees what the update uses
    optimizer.register_step_pre_hook(lambda opt, *_: seen.extend(p.grad.clone() for p in model.parameters()))
    model.loss("elbo", batch())["loss"].backward()
    raw = [p.grad.clone() for p in model.parameters()]
    optimizer.step()

    raw_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in raw]))
    assert raw_norm > 5 and max(g.abs().max() for g in raw) > 1  # the bounds below bite
    want = [(g * min(1.0, 0.5 / (float(raw_norm) + 1e-6))).clamp(-0.05, 0.05) for g in raw]
    for got, expected in zip(seen, want):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert all(bool((g.abs() <= 0.05).all()) for g in seen)  # 0.05 in float32, as the gradients hold it
    assert float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in seen]))) <= 0.5
    assert any(bool((g.abs() == 0.05).any()) for g in seen)  # some elements were clamped after the scaling


def test_without_clipping_the_optimizer_has_no_hook():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig(), "elbo")
    assert not optimizer._optimizer_step_pre_hooks  # the default step is today's


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.clip_norm=0", "optimizer.clip_norm: must be > 0, or null for no clipping (got 0"),
        (
            "+optimizer.phases.elbo.clip_value=-1",
            "optimizer.phases.elbo.clip_value: must be > 0, or null for no clipping",
        ),
    ],
)
def test_clipping_bounds_must_be_positive(override, message):
    from dgm_run.config import validate
    from tests.conftest import compose_cfg

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("+", r"\+")):
        validate(compose_cfg(override))


# --------------------------------------------------------------------------- initialisation
def weights(model, name: str) -> torch.Tensor:
    return dict(model.named_parameters())[name].detach()


def assert_glorot_normal(w: torch.Tensor, gain: float) -> None:
    """w's elements look N(0, gain^2 2 / (fan_in + fan_out)): their std within 3 % (its sampling error is
    under 0.3 % for the layers below, while PyTorch's default is 2.5x smaller), and a normal's kurtosis 3
    (a uniform's is 1.8)."""
    fan_out, fan_in = w.shape
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    w = w.detach().double().flatten()
    assert abs(float(w.std()) / std - 1) < 0.03, (float(w.std()), std)
    assert abs(float(w.mean())) < 3 * std / math.sqrt(len(w))
    assert abs(float(((w - w.mean()) ** 4).mean() / w.var() ** 2) - 3) < 0.15


def test_glorot_init_is_the_authors():
    """Hidden layers (each part of a split first layer with its own fans) Glorot-normal with the ReLU gain,
    the classifier's and the Bernoulli decoder's logits with gain 1, every Gaussian head N(0, 1e-3^2),
    every bias zero."""
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(init="glorot"), MNIST_SPEC)  # the paper's sizes: 784, a = z = 100, 500-500
    relu = math.sqrt(2)
    assert_glorot_normal(weights(model, "q_a.2.weight"), relu)  # 500 -> 500
    assert_glorot_normal(weights(model, "q_a.0.weight"), relu)  # 784 -> 500
    assert_glorot_normal(weights(model, "q_y_in.parts.1.weight"), relu)  # x's part of [a, x] -> 500
    assert_glorot_normal(weights(model, "q_y_in.parts.0.weight"), relu)  # a's part, 100 -> 500
    assert_glorot_normal(weights(model, "p_x.1.2.weight"), 1.0)  # the Bernoulli logits, 500 -> 784
    for head in ("q_a.4.weight", "q_z.1.2.weight", "p_a.1.2.weight"):  # mean and log-variance, 500 -> 200
        w = weights(model, head)
        assert abs(float(w.std()) / 1e-3 - 1) < 0.03, head
    biases = {n: p for n, p in model.named_parameters() if n.endswith("bias")}
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases.values())
    # The classifier's logits (500 -> 10): too few weights for the kurtosis, their std is gain 1's.
    w = weights(model, "q_y.1.2.weight")
    assert abs(float(w.std()) / math.sqrt(2 / 510) - 1) < 0.1


def fresh_kl_terms(model: ADGM, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean KL(q(z|a,x,y) || N(0, I)) and KL(q(a|x) || p(a|x,y,z)) of a fresh model on digits x with labels y."""
    with torch.no_grad():
        labels = Labels(10, given=y)
        mu_qa, logvar_qa = model.q_a(x).chunk(2, -1)
        a = mu_qa + torch.exp(0.5 * logvar_qa) * torch.randn_like(mu_qa)
        mu_z, logvar_z = model.q_z(model.q_z_in(labels, example=[a, x])).chunk(2, -1)
        z = mu_z + torch.exp(0.5 * logvar_z) * torch.randn_like(mu_z)
        mu_pa, logvar_pa = model.p_a_given(labels, x, z)
        kl_a = 0.5 * (logvar_pa - logvar_qa + (logvar_qa.exp() + (mu_qa - mu_pa) ** 2) / logvar_pa.exp() - 1).sum(-1)
        return float(kl_standard_normal(mu_z, logvar_z).mean()), float(kl_a.mean())


def test_glorot_init_starts_every_gaussian_at_the_standard_normal():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((200, 784), 0.15))  # about as many pixels on as a digit
    y = torch.arange(200) % 10
    kl_z, kl_a = fresh_kl_terms(ADGM(ADGM.Config(init="glorot"), MNIST_SPEC), x, y)
    assert kl_z < 0.05 and kl_a < 0.05, (kl_z, kl_a)
    # PyTorch's initialisation starts far from it: the bound above can fail.
    kl_z, kl_a = fresh_kl_terms(ADGM(ADGM.Config(), MNIST_SPEC), x, y)
    assert kl_z > 0.5 and kl_a > 0.5, (kl_z, kl_a)


def test_kingmas_init_draws_every_weight_from_a_small_normal():
    torch.manual_seed(0)
    model = M2(M2.Config(init="normal_1e-3"), MNIST_SPEC)
    for name, p in model.state_dict().items():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif p.numel() >= 5_000:  # the class-label columns (10 x 500) and larger
            assert abs(float(p.std()) / 1e-3 - 1) < 0.05 and abs(float(p.mean())) < 1e-4, name


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    default = M2(M2.Config(**SMALL), SPEC).state_dict()
    torch.manual_seed(0)
    again = M2(M2.Config(**SMALL, init="default"), SPEC).state_dict()
    assert all(torch.equal(default[k], again[k]) for k in default)


# --------------------------------------------------------------------------- ADGM's prior on a
def test_standard_prior_on_a_is_the_standard_normal_in_the_log_weight(monkeypatch):
    """p_a=standard: log w = log p(x|y,z) + log N(a; 0, I) + log p(z) + log p(y) - log q(z|a,x,y) - log q(a|x),
    computed by hand with the same draws, to the bit; there is no p(a|x,y,z) network."""
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, p_a="standard", **SMALL), SPEC)
    assert not [n for n, _ in model.named_parameters() if n.startswith("p_a")]
    x, y = torch.bernoulli(torch.full((4, 16), 0.5)), torch.tensor([0, 2, 1, 2])
    eps_a, eps_z = torch.randn(4, 3), torch.randn(2 + 2 * 3, 2)  # rows: 2 given labels, 2 x every label
    queue = [eps_a, eps_z]
    for module in (auxiliary_module, adgm_module):  # a ~ q(a|x), then z ~ q(z|a,x,y)
        monkeypatch.setattr(module, "reparameterize", lambda mu, logvar: mu + torch.exp(0.5 * logvar) * queue.pop(0))
    labels = Labels(3, given=y[:2], every=2)
    draw = model.draw_a(x)
    got = model.log_weight(x, labels, draw)

    a = draw.a
    mu_z, logvar_z = model.q_z(model.q_z_in(labels, example=[a, x])).chunk(2, -1)
    z = mu_z + torch.exp(0.5 * logvar_z) * eps_z
    log_px = labels.paired(model.log_px, model.p_x(model.p_x_in(labels, row=[z])), x)
    log_p_a = labels.rows(standard_normal_log_prob(a))
    want = (
        log_px
        + log_p_a
        + standard_normal_log_prob(z)
        + model.log_prior_y
        - normal_log_prob(z, mu_z, logvar_z)
        - labels.rows(draw.log_q)
    )
    assert torch.equal(got, want)
    assert torch.equal(model.log_p_a(labels, x, z, a), standard_normal_log_prob(labels.rows(a)))


def test_standard_prior_on_a_matches_the_textbook_sum():
    from tests.test_semi_supervised import exact_sum_against_the_textbook

    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, p_a="standard", **SMALL), SPEC)
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


def test_sdgm_refuses_the_standard_prior_on_a():
    with pytest.raises(UserError, match=r"model.p_a: 'standard' is ADGM's .* choose conditional"):
        SDGM(SDGM.Config(p_a="standard", a_dim=3, **SMALL), SPEC)


# --------------------------------------------------------------------------- Monte Carlo draws
def by_hand(model, b: Batch, draws: int, seed: int) -> dict[str, torch.Tensor]:
    """The authors' terms from the model's own per-draw logits and log weights, with the loss's draws."""
    k, n_l, n_u = model.n_classes, len(b.y_labelled), len(b.x)
    x = torch.cat([b.x_labelled.flatten(1).repeat(draws, 1), b.x.flatten(1).repeat(draws, 1)])
    y = b.y_labelled.repeat(draws)
    torch.manual_seed(seed)
    a = model.draw_a(x)
    logits = model.q_y_logits(a, x)  # (draws * (n_l + n_u), K): labelled rows first, each part draw-major
    log_w = model.log_weight(x, Labels(k, given=y, every=draws * n_u), a)
    q_l = F.softmax(logits[: draws * n_l], -1).view(draws, n_l, k).mean(0)
    q_u = F.softmax(logits[draws * n_l :], -1).view(draws, n_u, k).mean(0)
    log_w_u = log_w[draws * n_l :].view(draws, n_u, k).mean(0)
    per_draw_cls = F.cross_entropy(logits[: draws * n_l], y)
    return {
        "cls": -q_l[torch.arange(n_l), b.y_labelled].log().mean(),
        "per_draw_cls": per_draw_cls,
        "labelled": -log_w[: draws * n_l].mean(),
        "unlabelled": -((q_u * log_w_u).sum(-1) - (q_u * q_u.log()).sum(-1)).mean(),
    }


@pytest.mark.parametrize("model_class", [ADGM, SDGM])
@pytest.mark.parametrize("mode, cross_entropy", [("authors", "per_draw_cls"), ("authors_sdgm", "cls")])
def test_authors_averaging_weighs_the_sum_over_y_by_the_averaged_classifier(model_class, mode, cross_entropy):
    """Both codes weigh the unlabelled bound by q̄; the ADGM code's labelled cross-entropy (authors) is the
    mean over the 10 draws of -log q(y|a_s, x), the SDGM code's (authors_sdgm) -log q̄(y)."""
    torch.manual_seed(0)
    model = model_class(model_class.Config(a_dim=3, samples=10, mc_average=mode, **SMALL), SPEC)
    b = batch()
    torch.manual_seed(7)
    with torch.no_grad():
        terms = model.loss("elbo", b)
        want = by_hand(model, b, 10, seed=7)
    torch.testing.assert_close(terms["cls"], want[cross_entropy], rtol=1e-5, atol=1e-5)
    for name in ("labelled", "unlabelled"):
        torch.testing.assert_close(terms[name], want[name], rtol=1e-5, atol=1e-5)
    # q(y|a,x) varies with a: the averaged q's cross-entropy is below the mean of the draws' (Jensen).
    assert float(want["cls"]) < float(want["per_draw_cls"]) - 1e-4
    assert torch.isclose(terms["loss"], terms["labelled"] + terms["unlabelled"] + model.alpha * terms["cls"])


def test_the_adgm_codes_cross_entropy_is_the_mean_of_each_draws():
    """mc_average=authors with 10 draws: the labelled cross-entropy equals the mean over the draws of each
    draw's own cross-entropy, -log q(y|a_s, x) for the draw's a_s, computed draw by draw."""
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, samples=10, mc_average="authors", **SMALL), SPEC)
    b = batch()
    torch.manual_seed(3)
    with torch.no_grad():
        cls = model.loss("elbo", b)["cls"]
    torch.manual_seed(3)  # the loss's draws of a: q(a|x) on the 10 repeats of the batch, labelled rows first
    x = torch.cat([b.x_labelled.flatten(1).repeat(10, 1), b.x.flatten(1).repeat(10, 1)])
    with torch.no_grad():
        a = model.draw_a(x).a[: 10 * len(b.y_labelled)].view(10, len(b.y_labelled), -1)
        x_l = b.x_labelled.flatten(1)
        per_draw = [F.cross_entropy(model.q_y(model.q_y_in(a[s], x_l)), b.y_labelled) for s in range(10)]
    assert len({round(float(c), 4) for c in per_draw}) == 10  # the draws differ
    torch.testing.assert_close(cls, torch.stack(per_draw).mean(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model_class,extra", [(M2, {}), (ADGM, {"a_dim": 3})])
def test_one_draw_gives_the_same_loss_either_way(model_class, extra):
    losses = []
    for mode in ("bounds", "authors"):
        torch.manual_seed(0)
        model = model_class(model_class.Config(mc_average=mode, **extra, **SMALL), SPEC)
        torch.manual_seed(1)
        losses.append(model.loss("elbo", batch()))
    assert all(torch.equal(losses[0][name], losses[1][name]) for name in losses[0])


@pytest.mark.parametrize("model_class,extra", [(M2, {}), (ADGM, {"a_dim": 3}), (SDGM, {"a_dim": 3})])
def test_authors_averaging_matches_the_textbook_sum(model_class, extra):
    from tests.test_semi_supervised import exact_sum_against_the_textbook

    torch.manual_seed(0)
    model = model_class(model_class.Config(samples=3, mc_average="authors", **extra, **SMALL), SPEC)
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


def test_authors_averaging_needs_the_exact_sum():
    from dgm_run.checks import InvalidValue

    with pytest.raises(InvalidValue, match="mc_average: authors averages q"):
        M2.Config(mc_average="authors", marginalize="gumbel")


# --------------------------------------------------------------------------- M2's objective on sums
def test_sums_weigh_every_digit_alike_and_alpha_on_each_labelled_one():
    """reduction=sums: (sum_l (-log w + alpha CE) + sum_u U) / (B_l + B_u), Kingma's objective per example.
    With his batches of 1 labelled and 499 unlabelled digits and alpha = 0.1 N / N_l, the cross-entropy
    weighs 0.1 of the mean unlabelled bound."""
    torch.manual_seed(0)
    b = batch(n_u=499, y_l=(3,), side=28)
    terms = {}
    for reduction in ("means", "sums"):
        torch.manual_seed(0)
        model = M2(M2.Config(reduction=reduction, **SMALL), MNIST_SPEC)
        torch.manual_seed(1)
        terms[reduction] = model.loss("elbo", b)
    assert model.alpha == pytest.approx(50.0)  # 0.1 * 50,000 / 100
    sums, means = terms["sums"], terms["means"]
    for name in ("labelled", "unlabelled", "cls"):  # the same draws, the same terms
        assert torch.equal(sums[name], means[name])
    want = (sums["labelled"] + 499 * sums["unlabelled"] + 50.0 * sums["cls"]) / 500
    torch.testing.assert_close(sums["loss"], want)
    assert 50.0 / 500 == pytest.approx(0.1)  # the cross-entropy's weight against the mean unlabelled bound


def test_sums_with_equal_parts_are_half_the_means():
    """With as many labelled as unlabelled digits (ADGM's 100 + 100), the two conventions differ by 2."""
    losses = {}
    for reduction in ("means", "sums"):
        torch.manual_seed(0)
        model = M2(M2.Config(reduction=reduction, **SMALL), SPEC)
        torch.manual_seed(1)
        losses[reduction] = model.loss("elbo", batch(n_u=4))["loss"]
    torch.testing.assert_close(losses["sums"], losses["means"] / 2)
