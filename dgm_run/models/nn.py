"""Building blocks shared by the models: MLPs and the log-densities of the ELBO."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU,
               "leaky_relu": nn.LeakyReLU}
LOG_2PI = math.log(2 * math.pi)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """Linear layers of sizes in_dim -> *hidden -> out_dim, `activation` between them."""
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits), summed over the last dimension."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class LabelledInput(nn.Module):
    """First layer of a network on [u, onehot(y)], split as W [u; e_y] + b = (W_u u + b) + W_y[:, y].

    Summing a bound over every label y then computes W_u u once per u and only adds a
    column per label: the same numbers as the concatenated layer, K times less work.
    """

    def __init__(self, u_dim: int, n_classes: int, out_dim: int) -> None:
        super().__init__()
        self.u = nn.Linear(u_dim, out_dim)
        self.y = nn.Linear(n_classes, out_dim, bias=False)

    @property
    def label_columns(self) -> Tensor:
        """W_y as rows per label, (K, out_dim)."""
        return self.y.weight.T
