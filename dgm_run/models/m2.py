"""M2: the semi-supervised generative model of Kingma et al. 2014 (arXiv 1406.5298).

q(y|x) q(z|x,y), p(x|y,z) p(y) p(z) with p(y) uniform and p(z) standard normal; the
objective and its exact sum over y are in semi_supervised.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.contract import DataSpec
from dgm_run.models.labels import LabelledInput, Labels
from dgm_run.models.nn import (
    ACTIVATIONS,
    kl_standard_normal,
    mlp,
    normal_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from dgm_run.models.semi_supervised import SemiSupervisedConfig, SemiSupervisedModel
from dgm_run.models.vae_family import importance_log_weight


class M2(SemiSupervisedModel):
    @dataclass
    class Config(SemiSupervisedConfig):
        _target_: str = "dgm_run.models.m2.M2"

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        act, hidden = ACTIVATIONS[cfg.activation], cfg.hidden
        self.q_y = mlp(self.x_dim, hidden, self.n_classes, cfg.activation)
        self.q_z_in = LabelledInput([self.x_dim], [], self.n_classes, hidden[0])  # [x; y]
        self.q_z = nn.Sequential(act(), mlp(hidden[0], hidden[1:], 2 * cfg.z_dim, cfg.activation))
        self.p_x_in = LabelledInput([], [cfg.z_dim], self.n_classes, hidden[-1])  # [z; y]
        self.p_x = nn.Sequential(act(), mlp(hidden[-1], hidden[-2::-1], self.x_out_dim, cfg.activation))
        self.initialize([self.q_z], self.q_y, self.p_x)

    def log_weight(
        self,
        x: Tensor,
        labels: Labels,
        ctx: dict[str, Any],
        kl_weight: Optional[Tensor] = None,
        analytic_kl: bool = False,
    ) -> Tensor:
        mu, logvar = self.q_z(self.q_z_in(labels, example=[x])).chunk(2, dim=-1)
        z = reparameterize(mu, logvar)
        out = self.p_x(self.p_x_in(labels, row=[z]))
        log_px = labels.paired(self.log_px, out, x)
        if analytic_kl:
            return importance_log_weight(log_px, [-kl_standard_normal(mu, logvar), self.log_prior_y], [], kl_weight)
        return importance_log_weight(
            log_px, [standard_normal_log_prob(z), self.log_prior_y], [normal_log_prob(z, mu, logvar)], kl_weight
        )

    def class_logits(self, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        return self.q_y(x)

    def classify(self, x: Tensor) -> Tensor:
        return F.softmax(self.q_y(x), dim=-1)

    def encode_z(self, x: Tensor, y: Tensor) -> Tensor:
        return self.q_z(self.q_z_in(Labels(self.n_classes, given=y), example=[x])).chunk(2, dim=-1)[0]

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        return self.mean_x(self.p_x(self.p_x_in(Labels(self.n_classes, given=y), row=[z])))
