"""AVB's discriminator T(x, z) (Mescheder et al. 2017): the inner product of the authors' toy
example or an MLP on [x, z], optionally with the prior's term ||z||^2 / 2 added."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dgm_run.models.nn import mlp


class InnerProduct(nn.Module):
    """T(x, z) = <f(x), g(z)>: the authors' toy discriminator; f(x) is computed once per x
    however many codes z are scored against it."""

    def __init__(self, x_dim: int, z_dim: int, hidden: list[int], features: int, activation: str) -> None:
        super().__init__()
        self.f = mlp(x_dim, hidden, features, activation)
        self.g = mlp(z_dim, hidden, features, activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return (self.f(x) * self.g(z)).sum(-1)


class Joint(nn.Module):
    """T(x, z) = MLP([x, z])."""

    def __init__(self, x_dim: int, z_dim: int, hidden: list[int], activation: str) -> None:
        super().__init__()
        self.net = mlp(x_dim + z_dim, hidden, 1, activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([x.expand(*z.shape[:-1], x.shape[-1]), z], -1)).squeeze(-1)


class Discriminator(nn.Module):
    """T(x, z) for x (B, D) and codes z (..., B, Z), shape (..., B).

    With `prior_term`, T = net(x, z) + ||z||^2 / 2: since log p(z) = -||z||^2 / 2 + const,
    the net then only has to learn log q(z|x) + const rather than log q - log p."""

    def __init__(self, net: nn.Module, prior_term: bool) -> None:
        super().__init__()
        self.net = net
        self.prior_term = prior_term

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        t = self.net(x, z)
        return t + 0.5 * z.pow(2).sum(-1) if self.prior_term else t


def discriminator(x_dim: int, cfg: Any) -> Discriminator:
    """T(x, z) as AVB's config says (`discriminator`, its sizes, `prior_term`)."""
    if cfg.discriminator == "inner_product":
        net = InnerProduct(x_dim, cfg.z_dim, cfg.discriminator_hidden, cfg.discriminator_features, cfg.activation)
    else:
        net = Joint(x_dim, cfg.z_dim, cfg.discriminator_hidden, cfg.activation)
    return Discriminator(net, cfg.prior_term)
