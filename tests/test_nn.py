"""The shared building blocks: the Bernoulli log-likelihood and the chunks of an evaluation."""

from __future__ import annotations

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
