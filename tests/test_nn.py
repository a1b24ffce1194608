"""The shared building blocks: the Bernoulli log-likelihood and the chunks of an evaluation; the VAE
family's toolkit: likelihood heads, the importance-weighted log-likelihood, log w and the warm-up weight."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli

from dgm_run.models import nn as nn_module
from dgm_run.models.nn import bernoulli_log_prob, chunks


@pytest.mark.parametrize("x_shape", [(6, 3, 20), (6, 1, 20)])  # one x per row, or one x under every label
def test_bernoulli_log_prob_and_its_gradient_are_the_distributions(x_shape):
    torch.manual_seed(0)
    logits = (torch.randn(6, 3, 20) * 8).requires_grad_()  # up to |logit| ~ 30: both tails of softplus
    x = torch.rand(x_shape)
    x[..., :10] = x[..., :10].round()  # binary pixels and grey levels in [0, 1]
    got = bernoulli_log_prob(logits, x)
    assert got.shape == (6, 3)
    # Bernoulli.log_prob accepts x in [0, 1] without validation: -BCE(logits, x) per pixel.
    want = Bernoulli(logits=logits, validate_args=False).log_prob(x.expand_as(logits)).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    torch.testing.assert_close(grad, x.expand_as(logits) - torch.sigmoid(logits.detach()), rtol=0, atol=1e-6)


def test_bernoulli_log_prob_sums_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    layer, h = torch.nn.Linear(16, 784), torch.randn(10, 16)
    x = (torch.rand(10, 784) < 0.3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(h)  # bfloat16 under autocast
        got = bernoulli_log_prob(logits, x)
    assert logits.dtype == torch.bfloat16 and got.dtype == torch.float32
    # The same bfloat16 logits summed in float32: exact up to float32 rounding, where a bfloat16
    # sum of about -550 nats would be off by up to 2 nats.
    want = Bernoulli(logits=logits.float()).log_prob(x).sum(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)


def test_chunks_cover_every_sample_within_the_row_bound(monkeypatch):
    monkeypatch.setitem(nn_module.EVAL_CHUNK_ROWS, "cpu", 1_000)
    cpu = torch.device("cpu")
    assert list(chunks(100, 30, cpu)) == [33, 33, 33, 1]  # 33 samples of 30 rows: 990 rows per pass
    assert list(chunks(5, 2_000, cpu)) == [1] * 5  # one sample per pass even above the bound
    assert list(chunks(7, 10, cpu)) == [7]
    # Other devices take large passes.
    assert list(chunks(100, 1_000, torch.device("meta"))) == [100]


def test_likelihood_heads_are_the_distributions():
    from torch.distributions import Normal

    from dgm_run.models.vae.likelihoods import Bernoulli as BernoulliHead
    from dgm_run.models.vae.likelihoods import Gaussian

    torch.manual_seed(0)
    out, x = torch.randn(5, 8), torch.rand(5, 4)
    mu, logvar = out.chunk(2, -1)
    torch.testing.assert_close(Gaussian().log_prob(out, x), Normal(mu, (0.5 * logvar).exp()).log_prob(x).sum(-1))
    assert torch.equal(Gaussian().mean(out), mu) and torch.equal(Gaussian().location(out), mu)
    # One x under several outputs (a digit under every label) broadcasts.
    torch.testing.assert_close(
        Gaussian().log_prob(out.view(5, 1, 8).expand(5, 3, 8), x.unsqueeze(1)),
        Gaussian().log_prob(out, x).unsqueeze(1).expand(5, 3),
    )
    logits = torch.randn(5, 4)
    assert torch.equal(BernoulliHead().log_prob(logits, x), bernoulli_log_prob(logits, x))
    assert torch.equal(BernoulliHead().mean(logits), torch.sigmoid(logits))


@pytest.mark.parametrize("chunk_rows", [1_000, 30])  # one pass, or passes of 3, 3, 1 draws
def test_iw_log_likelihood_is_the_log_mean_weight_over_every_draw_and_entry(monkeypatch, chunk_rows):
    from dgm_run.models.vae.importance import iw_log_likelihood

    monkeypatch.setitem(nn_module.EVAL_CHUNK_ROWS, "cpu", chunk_rows)
    torch.manual_seed(0)
    log_w = torch.randn(7, 4, 3) * 5  # 7 draws, 4 examples, 3 labels
    taken, sizes = 0, []

    def draws(n):
        nonlocal taken
        sizes.append(n)
        taken += n
        return log_w[taken - n : taken]

    got = iw_log_likelihood(draws, 7, 4 * 3, torch.device("cpu"))
    assert sizes == ([7] if chunk_rows == 1_000 else [2, 2, 2, 1])
    want = torch.log(log_w.double().exp().sum((0, 2)) / 7).float()
    torch.testing.assert_close(got, want)
    # Without the label axis: (draws, examples).
    taken = 0
    log_w = log_w[..., 0].contiguous()
    got = iw_log_likelihood(draws, 7, 4, torch.device("cpu"))
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(7))


def test_importance_log_weight_and_the_warmup_weight():
    from dgm_run.contract import Progress
    from dgm_run.models.vae.family import warmup_weight
    from dgm_run.models.vae.importance import importance_log_weight

    log_px, p1, q1 = torch.tensor([-5.0, -7.0]), torch.tensor([-1.0, -2.0]), torch.tensor([-0.5, -0.25])
    assert torch.equal(importance_log_weight(log_px, [p1, -1.5], [q1]), log_px + p1 - 1.5 - q1)
    weight = torch.tensor(0.25)
    assert torch.equal(importance_log_weight(log_px, [p1, -1.5], [q1], weight), log_px + 0.25 * (p1 - 1.5 - q1))
    cpu = torch.device("cpu")
    progress = Progress()
    assert warmup_weight(progress, 0, 0, cpu) is None  # off
    assert float(warmup_weight(None, 2, 0, cpu)) == 1.0  # outside training
    # Over 2 epochs from epoch 0, and from epoch 1 (10 steps per epoch).
    for step, from_0, from_1 in ((0, 0.0, 0.0), (5, 0.25, 0.0), (20, 1.0, 0.5), (30, 1.0, 1.0)):
        progress.update(step, steps_per_epoch=10, total_steps=100)
        assert float(warmup_weight(progress, 2, 0, cpu)) == from_0
        assert float(warmup_weight(progress, 2, 1, cpu)) == from_1
