"""SDGM: the skip deep generative model of Maaløe et al. 2016 (arXiv 1602.05473).

Generative model:   p(y) = Cat(1/K),   p(z) = N(0, I),   p(a|y,z) = N(μ(y,z), diag σ²(y,z)),   p(x|a,y,z)
Inference model:    q(a|x),   q(y|a,x),   q(z|a,x,y)                      (auxiliary.py, as ADGM's)

Unlike ADGM's, the auxiliary variable is generated first and the pixels see it (the skip connection from
a to x), which makes the generative model richer. One draw a ~ q(a|x) per example and z ~ q(z|a,x,y) per
row give

    log w(x, y) = log p(x|a,y,z) + log p(a|y,z) + log p(z) + log p(y) - log q(z|a,x,y) - log q(a|x)

and the loss is M2's (objective.py) with q(y|a,x) as the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.nn import kl_standard_normal, normal_log_prob, reparameterize, standard_normal_log_prob
from dgm_run.models.semi_supervised.auxiliary import AuxiliaryConfig, AuxiliaryDraw, AuxiliaryModel
from dgm_run.models.semi_supervised.labels import LabelledInput, Labels
from dgm_run.models.vae.importance import importance_log_weight


class SDGM(AuxiliaryModel):
    @dataclass
    class Config(AuxiliaryConfig):
        _target_: str = "dgm_run.models.semi_supervised.sdgm.SDGM"

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        if cfg.p_a == "standard":
            raise UserError(
                "model.p_a: 'standard' is ADGM's (the authors' ADGM code); SDGM generates x from a, "
                "which it draws from p(a|y,z) (the paper's and its authors' code): choose conditional"
            )
        super().__init__(cfg, spec)
        hidden, k = cfg.hidden, self.n_classes
        # a, drawn once per x, enters p(x|a,y,z) through the per-example part.
        self.p_x_in = LabelledInput([cfg.a_dim], [cfg.z_dim], k, hidden[-1])  # [a; z; y]
        self.p_x = self.after_first(hidden[-1], hidden[-2::-1], self.x_out_dim)
        self.p_a_in = LabelledInput([], [cfg.z_dim], k, hidden[-1])  # [z; y]
        self.p_a = self.after_first(hidden[-1], hidden[-2::-1], 2 * cfg.a_dim)
        self.initialize_networks([self.p_a], self.p_x)

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
        warm-up), every term but log p(x|a,y,z) weighted by it; with `analytic_kl` (model.kl=analytic,
        training only), log p(z) - log q(z|a,x,y) as -KL(q(z|a,x,y) || N(0, I)) in closed form."""
        mu_z, logvar_z = self.q_z_given(labels, a.a, x)
        z = reparameterize(mu_z, logvar_z)
        log_px = labels.paired(self.log_px, self.p_x(self.p_x_in(labels, example=[a.a], row=[z])), x)
        mu_a, logvar_a = self.p_a_given(labels, z)
        log_p_a = normal_log_prob(labels.rows(a.a), mu_a, logvar_a)
        log_z = [-kl_standard_normal(mu_z, logvar_z)] if analytic_kl else [standard_normal_log_prob(z)]
        log_q = [labels.rows(a.log_q)] if analytic_kl else [normal_log_prob(z, mu_z, logvar_z), labels.rows(a.log_q)]
        return importance_log_weight(log_px, [log_p_a, *log_z, self.log_prior_y], log_q, kl_weight)

    def p_a_given(self, labels: Labels, z: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of p(a|y,z) per row of `labels`."""
        mu, logvar = self.p_a(self.p_a_in(labels, row=[z])).chunk(2, dim=-1)
        return mu, logvar

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        """The mean of p(x|a,y,z) at the mean of p(a|y,z)."""
        labels = Labels(self.n_classes, given=y)
        a = self.p_a_given(labels, z)[0]
        return self.mean_x(self.p_x(self.p_x_in(labels, example=[a], row=[z])))
