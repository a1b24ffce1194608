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


class PartsLinear(nn.Module):
    """A Linear on the concatenation of several inputs, one weight per input: W_1 u_1 + W_2 u_2 + ... + b.

    The same numbers as the concatenated layer, but its backward computes no gradient for an
    input that needs none (the data x beside a sampled a), where the concatenated layer's
    backward computes it for every column.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.parts = nn.ModuleList(nn.Linear(d, out_dim, bias=bias and i == 0) for i, d in enumerate(in_dims))

    def forward(self, *inputs: Tensor) -> Tensor:
        out = self.parts[0](inputs[0])
        for layer, u in zip(self.parts[1:], inputs[1:]):
            # addmm adds the product into the running sum in one pass; otherwise the parts broadcast,
            # e.g. draws (n, B, .) of a beside x (B, .): x's part is then computed once per x.
            out = torch.addmm(out, u, layer.weight.T) if u.dim() == 2 == out.dim() else out + layer(u)
        return out
