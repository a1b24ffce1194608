"""ADGM: the auxiliary deep generative model of Maaløe et al. 2016 (arXiv 1602.05473).

Inference q(a|x) q(y|a,x) q(z|a,x,y); generative p(a|x,y,z) p(x|y,z) p(y) p(z) with p(y)
uniform and p(z) standard normal. The auxiliary a makes q(y|a,x) a richer classifier;
test predictions average q(y|a,x) over `eval_samples` draws of a. No batch norm: the
paper reports that it made the official code diverge. SDGM (sdgm.py) is the skip variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.config import check_positive
from dgm_run.data.base import DataSpec
from dgm_run.models.nn import (ACTIVATIONS, LabelledInput, mlp, normal_log_prob, reparameterize,
                               standard_normal_log_prob)
from dgm_run.models.semi_supervised import IW_CHUNK_ROWS, Labels, SemiSupervisedConfig, SemiSupervisedModel


class ADGM(SemiSupervisedModel):
    # SDGM: a enters the generative model of x, p(x|a,y,z), and p(a|y,z) no longer sees x.
    skip = False

    @dataclass
    class Config(SemiSupervisedConfig):
        _target_: str = "dgm_run.models.adgm.ADGM"
        a_dim: int = 100
        z_dim: int = 100
        hidden: list[int] = field(default_factory=lambda: [500, 500])
        activation: str = "relu"
        # Draws of a ~ q(a|x) over which q(y|a,x) is averaged for test predictions.
        eval_samples: int = 100
        iw_samples: int = 10

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "a_dim", "eval_samples")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        act, hidden, k = ACTIVATIONS[cfg.activation], cfg.hidden, self.n_classes
        a_dim, z_dim, x_dim = cfg.a_dim, cfg.z_dim, self.x_dim
        self.q_a = mlp(x_dim, hidden, 2 * a_dim, cfg.activation)
        self.q_y = mlp(a_dim + x_dim, hidden, k, cfg.activation)
        self.q_z_in = LabelledInput(a_dim + x_dim, k, hidden[0])
        self.q_z = nn.Sequential(act(), mlp(hidden[0], hidden[1:], 2 * z_dim, cfg.activation))
        self.p_x_in = LabelledInput(z_dim + (a_dim if self.skip else 0), k, hidden[-1])
        self.p_x = nn.Sequential(act(), mlp(hidden[-1], hidden[-2::-1], self.x_out_dim, cfg.activation))
        self.p_a_in = LabelledInput(z_dim, k, hidden[-1])
        # ADGM's p(a|x,y,z) sees x: that part of its first layer is computed once per x.
        self.p_a_x = None if self.skip else nn.Linear(x_dim, hidden[-1], bias=False)
        self.p_a = nn.Sequential(act(), mlp(hidden[-1], hidden[-2::-1], 2 * a_dim, cfg.activation))

    def _sample_a(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """a ~ q(a|x), log q(a|x) and the classifier input [a, x]."""
        mu, logvar = self.q_a(x).chunk(2, dim=-1)
        a = reparameterize(mu, logvar)
        return a, normal_log_prob(a, mu, logvar), torch.cat([a, x], dim=-1)

    def prepare(self, x: Tensor) -> dict[str, Any]:
        a, log_q_a, ax = self._sample_a(x)
        ctx = {"a": a, "log_q_a": log_q_a, "ax": ax, "h_z": self.q_z_in.u(ax)}
        if self.p_a_x is not None:
            ctx["h_a"] = self.p_a_x(x)
        return ctx

    def class_logits(self, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        return self.q_y(ctx["ax"])

    def _p_a(self, z: Tensor, label_columns: Tensor, h_a: Any = 0.0) -> tuple[Tensor, Tensor]:
        mu, logvar = self.p_a(self.p_a_in.u(z) + label_columns + h_a).chunk(2, dim=-1)
        return mu, logvar

    def _p_x(self, a: Optional[Tensor], z: Tensor, label_columns: Tensor) -> Tensor:
        inputs = torch.cat([a.expand(*z.shape[:-1], -1), z], dim=-1) if self.skip else z
        return self.p_x(self.p_x_in.u(inputs) + label_columns)

    def log_weight(self, x: Tensor, labels: Labels, ctx: dict[str, Any]) -> Tensor:
        each = labels.per_example
        mu_z, logvar_z = self.q_z(each(ctx["h_z"]) + labels.columns(self.q_z_in)).chunk(2, dim=-1)
        z = reparameterize(mu_z, logvar_z)
        a = each(ctx["a"])
        out = self._p_x(a, z, labels.columns(self.p_x_in))
        mu_a, logvar_a = self._p_a(z, labels.columns(self.p_a_in), each(ctx["h_a"]) if "h_a" in ctx else 0.0)
        return (self.log_px(out, each(x)) + normal_log_prob(a, mu_a, logvar_a)
                + standard_normal_log_prob(z) + self.log_prior_y
                - normal_log_prob(z, mu_z, logvar_z) - each(ctx["log_q_a"]))

    def classify(self, x: Tensor) -> Tensor:
        """q(y|x) as the mean of q(y|a,x) over eval_samples draws of a."""
        n_samples = self.cfg.eval_samples
        per_chunk = max(1, IW_CHUNK_ROWS // len(x))
        total = 0.0
        for start in range(0, n_samples, per_chunk):
            n = min(per_chunk, n_samples - start)
            probs = F.softmax(self.q_y(self._sample_a(x.repeat(n, 1))[2]), dim=-1)
            total = total + probs.view(n, len(x), -1).sum(0)
        return total / n_samples

    def encode_z(self, x: Tensor, y: Tensor) -> Tensor:
        a = self.q_a(x).chunk(2, dim=-1)[0]
        h = self.q_z_in.u(torch.cat([a, x], dim=-1)) + self.q_z_in.label_columns[y]
        return self.q_z(h).chunk(2, dim=-1)[0]

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        # SDGM's pixels see a: take the mean of p(a|y,z). ADGM's p(x|y,z) does not need it.
        a = self._p_a(z, self.p_a_in.label_columns[y])[0] if self.skip else None
        return self.mean_x(self._p_x(a, z, self.p_x_in.label_columns[y]))
