"""M2: the semi-supervised generative model of Kingma et al. 2014 (arXiv 1406.5298).

Generative model:   p(y) = Cat(1/K),   p(z) = N(0, I),   p(x|y,z) = Bernoulli (or Gaussian) from an MLP on [z, y]
Inference model:    q(y|x) = Cat(π(x)),   q(z|x,y) = N(μ(x,y), diag σ²(x,y))

One draw z ~ q(z|x,y) gives the log importance weight

    log w(x, y) = log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)

and the loss (the paper's equation 9, objective.py) is -log w(x, y) + α·(-log q(y|x)) on a labelled digit
and -Σ_y q(y|x) log w(x, y) - H(q(y|x)) on an unlabelled one, y summed out exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.contract import Batch, DataSpec
from dgm_run.models.nn import (
    ACTIVATIONS,
    kl_standard_normal,
    mlp,
    normal_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from dgm_run.models.semi_supervised.family import SemiSupervisedConfig, SemiSupervisedModel
from dgm_run.models.semi_supervised.labels import LabelledInput, Labels
from dgm_run.models.vae.importance import importance_log_weight


class M2(SemiSupervisedModel):
    @dataclass
    class Config(SemiSupervisedConfig):
        _target_: str = "dgm_run.models.semi_supervised.m2.M2"

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        act, hidden = ACTIVATIONS[cfg.activation], cfg.hidden
        self.q_y = mlp(self.x_dim, hidden, self.n_classes, cfg.activation)
        self.q_z_in = LabelledInput([self.x_dim], [], self.n_classes, hidden[0])  # [x; y]
        self.q_z = nn.Sequential(act(), mlp(hidden[0], hidden[1:], 2 * cfg.z_dim, cfg.activation))
        self.p_x_in = LabelledInput([], [cfg.z_dim], self.n_classes, hidden[-1])  # [z; y]
        self.p_x = nn.Sequential(act(), mlp(hidden[-1], hidden[-2::-1], self.x_out_dim, cfg.activation))
        self.initialize([self.q_z], self.q_y, self.p_x)

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        rows = self.stack(batch)
        log_q, cross_entropy = self.classifier(self.q_y(rows.x), rows)
        labels = self.label_rows(rows, log_q)
        kl_weight = self.kl_weight(batch, rows.x.device)
        log_w = self.log_weight(rows.x, labels, kl_weight, analytic_kl=self.cfg.kl == "analytic")
        return self.bound(labels, log_w, log_q, cross_entropy, kl_weight)

    def log_weight(
        self, x: Tensor, labels: Labels, kl_weight: Optional[Tensor] = None, analytic_kl: bool = False
    ) -> Tensor:
        """log w(x, y) per row of `labels`, (rows,), from one draw of z; with `kl_weight` (the warm-up), every
        term but log p(x|y,z) weighted by it; with `analytic_kl` (model.kl=analytic, training only), log p(z) -
        log q(z|x,y) as -KL(q(z|x,y) || N(0, I)) in closed form."""
        mu, logvar = self.q_z(self.q_z_in(labels, example=[x])).chunk(2, dim=-1)
        z = reparameterize(mu, logvar)
        out = self.p_x(self.p_x_in(labels, row=[z]))
        log_px = labels.paired(self.log_px, out, x)
        if analytic_kl:
            return importance_log_weight(log_px, [-kl_standard_normal(mu, logvar), self.log_prior_y], [], kl_weight)
        return importance_log_weight(
            log_px, [standard_normal_log_prob(z), self.log_prior_y], [normal_log_prob(z, mu, logvar)], kl_weight
        )

    def every_label_log_weight(self, x: Tensor) -> Tensor:
        return self.log_weight(x, Labels(self.n_classes, every=len(x)))

    def classify(self, x: Tensor) -> Tensor:
        return F.softmax(self.q_y(x), dim=-1)

    def encode_z(self, x: Tensor, y: Tensor) -> Tensor:
        return self.q_z(self.q_z_in(Labels(self.n_classes, given=y), example=[x])).chunk(2, dim=-1)[0]

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        return self.mean_x(self.p_x(self.p_x_in(Labels(self.n_classes, given=y), row=[z])))
