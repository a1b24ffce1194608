"""p(x|.) from a decoder's output, chosen by `model.likelihood`: `bernoulli` (logits, data in [0, 1]) or
`gaussian` (a mean and a log-variance per dimension: a learnt diagonal variance)."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm_run.models.nn import bernoulli_log_prob, normal_log_prob


class Bernoulli:
    """p(x|.) Bernoulli, the decoder's output its logits: data in [0, 1] (binarized pixels, one-hot points)."""

    outputs_per_dim = 1

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return bernoulli_log_prob(out, x)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def location(self, out: Tensor) -> Tensor:
        """Scores that order the dimensions as the means do (for an argmax): the logits."""
        return out


class Gaussian:
    """p(x|.) = N(mu, diag(exp(logvar))), the decoder's output [mu, logvar]: continuous data."""

    outputs_per_dim = 2

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        mu, logvar = out.chunk(2, dim=-1)
        return normal_log_prob(x.expand_as(mu), mu, logvar)

    def mean(self, out: Tensor) -> Tensor:
        return out.chunk(2, dim=-1)[0]

    location = mean


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
