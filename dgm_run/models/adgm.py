"""ADGM: the auxiliary deep generative model of Maaløe et al. 2016 (arXiv 1602.05473).

Inference q(a|x) q(y|a,x) q(z|a,x,y); generative p(a|x,y,z) p(x|y,z) p(y) p(z) with p(y)
uniform and p(z) standard normal. The auxiliary a makes q(y|a,x) a richer classifier;
test predictions average q(y|a,x) over `eval_samples` draws of a. SDGM (sdgm.py) is the skip
variant. `batch_norm` normalises every hidden layer before its activation, where the SDGM authors'
code puts it (larsmaaloee/auxiliary-deep-generative-models models/sdgmssl.py, batchnorm=True; the
paper reports that batch norm made the ADGM code diverge).

The code behind the ADGM authors' published log (ml-lab/auxiliary-deep-generative-models,
models/adgmssl.py) differs from the paper's model in three options: `p_a=standard` replaces p(a|x,y,z)
by N(0, I) (a is auxiliary, so the generative model of x is the same, only the bound changes);
`train_q_a=false` leaves q(a|x) at its initialisation (its parameters are sliced out of every update,
so a is noise around a random projection of x); `q_z_sees_a=false` is q(z|x,y) without a.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check_choice, check_positive
from dgm_run.contract import DataSpec
from dgm_run.errors import UserError
from dgm_run.models.labels import LabelledInput, Labels
from dgm_run.models.nn import (
    ACTIVATIONS,
    PartsLinear,
    RowBatchNorm,
    chunks,
    kl_standard_normal,
    mlp,
    normal_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from dgm_run.models.semi_supervised import SemiSupervisedConfig, SemiSupervisedModel
from dgm_run.models.vae_family import importance_log_weight


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
        # The prior on a: conditional, p(a|x,y,z) (the paper's; SDGM's p(a|y,z)); standard, N(0, I) (the
        # authors' published ADGM code, behind their log).
        p_a: str = "conditional"
        # false: q(a|x) keeps its initial weights, left out of every update (the authors' ADGM code).
        train_q_a: bool = True
        # false: q(z|x,y), without a (the authors' ADGM code); true: the paper's q(z|a,x,y).
        q_z_sees_a: bool = True
        # Batch normalisation before the activation of every hidden layer of every network (the SDGM code).
        batch_norm: bool = False

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "a_dim", "eval_samples")
            check_choice(self, "p_a", ("conditional", "standard"))

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        if self.skip and cfg.p_a == "standard":
            raise UserError(
                "model.p_a: 'standard' is ADGM's (the authors' ADGM code); SDGM generates x from a, "
                "which it draws from p(a|y,z) (the paper's and its authors' code): choose conditional"
            )
        super().__init__(cfg, spec)
        hidden, k = cfg.hidden, self.n_classes
        a_dim, z_dim, x_dim = cfg.a_dim, cfg.z_dim, self.x_dim

        def after_first(width: int, rest: list[int], out_dim: int) -> nn.Sequential:
            """What follows a split first layer of `width` units: its batch norm (with batch_norm) and activation,
            the hidden layers, the head."""
            return nn.Sequential(
                *([RowBatchNorm(width)] if cfg.batch_norm else []),
                ACTIVATIONS[cfg.activation](),
                mlp(width, rest, out_dim, cfg.activation, cfg.batch_norm),
            )

        self.q_a = mlp(x_dim, hidden, 2 * a_dim, cfg.activation, cfg.batch_norm)
        # Networks on [a, x] take a and x through separate weights: no gradient is computed for x.
        self.q_y_in = PartsLinear([a_dim, x_dim], hidden[0])
        self.q_y = after_first(hidden[0], hidden[1:], k)
        self.q_z_in = LabelledInput([a_dim, x_dim] if cfg.q_z_sees_a else [x_dim], [], k, hidden[0])  # [(a,) x; y]
        self.q_z = after_first(hidden[0], hidden[1:], 2 * z_dim)
        # p(x|y,z), SDGM's p(x|a,y,z): a, drawn once per x, enters through the per-example part.
        self.p_x_in = LabelledInput([a_dim] if self.skip else [], [z_dim], k, hidden[-1])
        self.p_x = after_first(hidden[-1], hidden[-2::-1], self.x_out_dim)
        # p(a|x,y,z), SDGM's p(a|y,z): ADGM's x enters through the per-example part. None: N(0, I).
        self.conditional_p_a = cfg.p_a == "conditional"
        if self.conditional_p_a:
            self.p_a_in = LabelledInput([] if self.skip else [x_dim], [z_dim], k, hidden[-1])
            self.p_a = after_first(hidden[-1], hidden[-2::-1], 2 * a_dim)
        self.initialize([self.q_a, self.q_z, *([self.p_a] if self.conditional_p_a else [])], self.q_y, self.p_x)
        if not cfg.train_q_a:
            self.q_a.requires_grad_(False)  # out of phase_parameters: no optimizer, no weight prior, no clipping

    def prepare(self, x: Tensor) -> dict[str, Any]:
        """a ~ q(a|x), log q(a|x), and q(a|x)'s mean and log-variance (for model.kl=analytic)."""
        mu, logvar = self.q_a(x).chunk(2, dim=-1)
        a = reparameterize(mu, logvar)
        return {"a": a, "log_q_a": normal_log_prob(a, mu, logvar), "mu_a": mu, "logvar_a": logvar}

    def class_logits(self, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        return self.q_y(self.q_y_in(ctx["a"], x))

    def _p_a(self, labels: Labels, x: Optional[Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.p_a(self.p_a_in(labels, example=[] if x is None else [x], row=[z])).chunk(2, dim=-1)
        return mu, logvar

    def log_p_a(self, labels: Labels, x: Tensor, z: Tensor, a: Tensor) -> Tensor:
        """log p(a|x,y,z) per row (SDGM: p(a|y,z)); with p_a=standard, log N(a; 0, I), once per example."""
        if not self.conditional_p_a:
            return labels.rows(standard_normal_log_prob(a))
        mu, logvar = self._p_a(labels, None if self.skip else x, z)
        return normal_log_prob(labels.rows(a), mu, logvar)

    def _p_x(self, labels: Labels, a: Optional[Tensor], z: Tensor) -> Tensor:
        return self.p_x(self.p_x_in(labels, example=[] if a is None else [a], row=[z]))

    def _q_z_inputs(self, a: Tensor, x: Tensor) -> list[Tensor]:
        return [a, x] if self.cfg.q_z_sees_a else [x]

    def log_weight(
        self,
        x: Tensor,
        labels: Labels,
        ctx: dict[str, Any],
        kl_weight: Optional[Tensor] = None,
        analytic_kl: bool = False,
    ) -> Tensor:
        a = ctx["a"]
        mu_z, logvar_z = self.q_z(self.q_z_in(labels, example=self._q_z_inputs(a, x))).chunk(2, dim=-1)
        z = reparameterize(mu_z, logvar_z)
        out = self._p_x(labels, a if self.skip else None, z)
        log_px = labels.paired(self.log_px, out, x)
        if not analytic_kl:
            return importance_log_weight(
                log_px,
                [self.log_p_a(labels, x, z, a), standard_normal_log_prob(z), self.log_prior_y],
                [normal_log_prob(z, mu_z, logvar_z), labels.rows(ctx["log_q_a"])],
                kl_weight,
            )
        # The closed forms: z always; a where its prior is N(0, I), once per example.
        if self.conditional_p_a:
            log_p, log_q = [self.log_p_a(labels, x, z, a)], [labels.rows(ctx["log_q_a"])]
        else:
            log_p, log_q = [labels.rows(-kl_standard_normal(ctx["mu_a"], ctx["logvar_a"]))], []
        return importance_log_weight(
            log_px, [*log_p, -kl_standard_normal(mu_z, logvar_z), self.log_prior_y], log_q, kl_weight
        )

    def classify(self, x: Tensor) -> Tensor:
        """q(y|x) as the mean of q(y|a,x) over eval_samples draws of a. q(a|x) and x's part of the
        classifier's first layer are computed once per x, not once per draw."""
        n_samples = self.cfg.eval_samples
        mu, logvar = self.q_a(x).chunk(2, dim=-1)
        a_part, x_part = self.q_y_in.parts  # the bias is a's
        h_x = x_part(x)
        total = 0.0
        for n in chunks(n_samples, len(x), x.device):
            a = reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape))  # (n, B, a)
            total = total + F.softmax(self.q_y(a_part(a) + h_x), dim=-1).sum(0)
        return total / n_samples

    def encode_z(self, x: Tensor, y: Tensor) -> Tensor:
        a = self.q_a(x).chunk(2, dim=-1)[0]
        labels = Labels(self.n_classes, given=y)
        return self.q_z(self.q_z_in(labels, example=self._q_z_inputs(a, x))).chunk(2, dim=-1)[0]

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        # SDGM's pixels see a: take the mean of p(a|y,z). ADGM's p(x|y,z) does not need it.
        labels = Labels(self.n_classes, given=y)
        a = self._p_a(labels, None, z)[0] if self.skip else None
        return self.mean_x(self._p_x(labels, a, z))
