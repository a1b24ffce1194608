"""ADGM: the auxiliary deep generative model of Maaløe et al. 2016 (arXiv 1602.05473).

Generative model:   p(y) = Cat(1/K),   p(z) = N(0, I),   p(x|y,z),   p(a|x,y,z) = N(μ(x,y,z), diag σ²(x,y,z))
Inference model:    q(a|x),   q(y|a,x),   q(z|a,x,y)                      (auxiliary.py)

a is auxiliary: the generative model of x is M2's, and p(a|x,y,z) only enters the bound. One draw
a ~ q(a|x) per example and z ~ q(z|a,x,y) per row give

    log w(x, y) = log p(x|y,z) + log p(a|x,y,z) + log p(z) + log p(y) - log q(z|a,x,y) - log q(a|x)

and the loss is M2's (objective.py) with q(y|a,x) as the classifier.

The code behind the authors' published log (ml-lab/auxiliary-deep-generative-models, models/adgmssl.py)
differs from the paper's model in three options: `p_a=standard` replaces p(a|x,y,z) by N(0, I) (only the
bound changes); `train_q_a=false` leaves q(a|x) at its initialisation (its parameters are sliced out of
every update, so a is noise around a random projection of x); `q_z_sees_a=false` is q(z|x,y) without a.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from dgm_run.contract import Batch, DataSpec
from dgm_run.models.nn import kl_standard_normal, normal_log_prob, reparameterize, standard_normal_log_prob
from dgm_run.models.semi_supervised.auxiliary import AuxiliaryConfig, AuxiliaryDraw, AuxiliaryModel
from dgm_run.models.semi_supervised.labels import LabelledInput, Labels
from dgm_run.models.vae.importance import importance_log_weight


class ADGM(AuxiliaryModel):
    @dataclass
    class Config(AuxiliaryConfig):
        _target_: str = "dgm_run.models.semi_supervised.adgm.ADGM"

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        hidden, k = cfg.hidden, self.n_classes
        self.p_x_in = LabelledInput([], [cfg.z_dim], k, hidden[-1])  # [z; y]
        self.p_x = self.after_first(hidden[-1], hidden[-2::-1], self.x_out_dim)
        # p(a|x,y,z): x enters through the per-example part. p_a=standard: N(0, I), no network.
        self.conditional_p_a = cfg.p_a == "conditional"
        if self.conditional_p_a:
            self.p_a_in = LabelledInput([self.x_dim], [cfg.z_dim], k, hidden[-1])  # [x; z; y]
            self.p_a = self.after_first(hidden[-1], hidden[-2::-1], 2 * cfg.a_dim)
        self.initialize_networks([self.p_a] if self.conditional_p_a else [], self.p_x)

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        rows = self.stack(batch)
        a = self.draw_a(rows.x)  # once per example, shared by every label
        log_q, cross_entropy = self.classifier(self.q_y_logits(a, rows.x), rows)
        labels = self.label_rows(rows, log_q)
        kl_weight = self.kl_weight(batch, rows.x.device)
        log_w = self.log_weight(rows.x, labels, a, kl_weight, analytic_kl=self.cfg.kl == "analytic")
        return self.bound(labels, log_w, log_q, cross_entropy, kl_weight)

    def log_weight(
        self,
        x: Tensor,
        labels: Labels,
        a: AuxiliaryDraw,
        kl_weight: Optional[Tensor] = None,
        analytic_kl: bool = False,
    ) -> Tensor:
        """log w(x, y) per row of `labels`, (rows,), from the draw `a` and one draw of z; with `kl_weight` (the
        warm-up), every term but log p(x|y,z) weighted by it; with `analytic_kl` (model.kl=analytic, training
        only), z, and a under p_a=standard, enter as -KL(q || N(0, I)) in closed form."""
        mu_z, logvar_z = self.q_z_given(labels, a.a, x)
        z = reparameterize(mu_z, logvar_z)
        log_px = labels.paired(self.log_px, self.p_x(self.p_x_in(labels, row=[z])), x)
        if not analytic_kl:
            log_p = [self.log_p_a(labels, x, z, a.a), standard_normal_log_prob(z), self.log_prior_y]
            log_q = [normal_log_prob(z, mu_z, logvar_z), labels.rows(a.log_q)]
            return importance_log_weight(log_px, log_p, log_q, kl_weight)
        if self.conditional_p_a:
            log_p_a, log_q = [self.log_p_a(labels, x, z, a.a)], [labels.rows(a.log_q)]
        else:
            log_p_a, log_q = [labels.rows(-kl_standard_normal(a.mu, a.logvar))], []
        log_p = [*log_p_a, -kl_standard_normal(mu_z, logvar_z), self.log_prior_y]
        return importance_log_weight(log_px, log_p, log_q, kl_weight)

    def log_p_a(self, labels: Labels, x: Tensor, z: Tensor, a: Tensor) -> Tensor:
        """log p(a|x,y,z) per row; with p_a=standard, log N(a; 0, I)."""
        if not self.conditional_p_a:
            return labels.rows(standard_normal_log_prob(a))
        return normal_log_prob(labels.rows(a), *self.p_a_given(labels, x, z))

    def p_a_given(self, labels: Labels, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of p(a|x,y,z) per row of `labels`."""
        mu, logvar = self.p_a(self.p_a_in(labels, example=[x], row=[z])).chunk(2, dim=-1)
        return mu, logvar

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        return self.mean_x(self.p_x(self.p_x_in(Labels(self.n_classes, given=y), row=[z])))
