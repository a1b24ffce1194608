"""What ADGM and SDGM (Maaløe et al. 2016, arXiv 1602.05473) share: the auxiliary variable a and the
inference model

    q(a|x) = N(μ(x), diag σ²(x)),   q(y|a,x) = Cat(π(a,x)),   q(z|a,x,y) = N(μ(a,x,y), diag σ²(a,x,y)).

a is drawn once per example (`draw_a`) and shared by every label of the exact sum; it makes q(y|a,x) a
richer classifier, whose test predictions average q(y|a,x) over `eval_samples` draws of a (`classify`).
The two models differ in their generative model, each in its own file (adgm.py, sdgm.py).

`batch_norm` normalises every hidden layer before its activation, where the SDGM authors' code puts it
(larsmaaloee/auxiliary-deep-generative-models models/sdgmssl.py, batchnorm=True; the paper reports that
batch norm made the ADGM code diverge). `train_q_a=false` and `q_z_sees_a=false` are options of the ADGM
code behind the authors' published log (adgm.py says what they do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check_choice, check_positive
from dgm_run.contract import DataSpec
from dgm_run.models.nn import ACTIVATIONS, PartsLinear, RowBatchNorm, chunks, mlp, normal_log_prob, reparameterize
from dgm_run.models.semi_supervised.family import SemiSupervisedConfig, SemiSupervisedModel
from dgm_run.models.semi_supervised.labels import LabelledInput, Labels


@dataclass
class AuxiliaryConfig(SemiSupervisedConfig):
    a_dim: int = 100
    z_dim: int = 100
    hidden: list[int] = field(default_factory=lambda: [500, 500])
    activation: str = "relu"
    # Draws of a ~ q(a|x) over which q(y|a,x) is averaged for test predictions.
    eval_samples: int = 100
    iw_samples: int = 10
    # The prior on a: conditional, p(a|x,y,z) (the paper's; SDGM's p(a|y,z)); standard, N(0, I) (the
    # authors' published ADGM code, behind their log; ADGM only).
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


@dataclass
class AuxiliaryDraw:
    """a ~ q(a|x) for each row of x, with log q(a|x) and q(a|x)'s mean and log-variance (model.kl=analytic)."""

    a: Tensor
    log_q: Tensor
    mu: Tensor
    logvar: Tensor


class AuxiliaryModel(SemiSupervisedModel):
    """The inference networks: q(a|x), q(y|a,x), q(z|a,x,y). A subclass adds its generative networks and
    then calls `initialize_networks`."""

    def __init__(self, cfg: AuxiliaryConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        hidden, k, a_dim, x_dim = cfg.hidden, self.n_classes, cfg.a_dim, self.x_dim
        self.q_a = mlp(x_dim, hidden, 2 * a_dim, cfg.activation, cfg.batch_norm)
        # Networks on [a, x] take a and x through separate weights: no gradient is computed for x.
        self.q_y_in = PartsLinear([a_dim, x_dim], hidden[0])
        self.q_y = self.after_first(hidden[0], hidden[1:], k)
        self.q_z_in = LabelledInput([a_dim, x_dim] if cfg.q_z_sees_a else [x_dim], [], k, hidden[0])  # [(a,) x; y]
        self.q_z = self.after_first(hidden[0], hidden[1:], 2 * cfg.z_dim)

    def after_first(self, width: int, rest: list[int], out_dim: int) -> nn.Sequential:
        """What follows a split first layer of `width` units: its batch norm (with batch_norm) and activation,
        the hidden layers, the head."""
        cfg = self.cfg
        return nn.Sequential(
            *([RowBatchNorm(width)] if cfg.batch_norm else []),
            ACTIVATIONS[cfg.activation](),
            mlp(width, rest, out_dim, cfg.activation, cfg.batch_norm),
        )

    def initialize_networks(self, gaussians: list[nn.Module], decoder: nn.Module) -> None:
        """model.init on every network, given the generative model's Gaussian networks and its decoder; with
        train_q_a=false, q(a|x) then leaves every update."""
        self.initialize([self.q_a, self.q_z, *gaussians], self.q_y, decoder)
        if not self.cfg.train_q_a:
            self.q_a.requires_grad_(False)  # out of phase_parameters: no optimizer, no weight prior, no clipping

    def draw_a(self, x: Tensor) -> AuxiliaryDraw:
        mu, logvar = self.q_a(x).chunk(2, dim=-1)
        a = reparameterize(mu, logvar)
        return AuxiliaryDraw(a, normal_log_prob(a, mu, logvar), mu, logvar)

    def q_y_logits(self, a: AuxiliaryDraw, x: Tensor) -> Tensor:
        """The logits of q(y|a,x), (B, K)."""
        return self.q_y(self.q_y_in(a.a, x))

    def q_z_given(self, labels: Labels, a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of q(z|a,x,y) per row of `labels` (q(z|x,y) with q_z_sees_a=false)."""
        inputs = [a, x] if self.cfg.q_z_sees_a else [x]
        mu, logvar = self.q_z(self.q_z_in(labels, example=inputs)).chunk(2, dim=-1)
        return mu, logvar

    def every_label_log_weight(self, x: Tensor) -> Tensor:
        labels = Labels(self.n_classes, every=len(x))
        return self.log_weight(x, labels, self.draw_a(x))

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
        return self.q_z_given(Labels(self.n_classes, given=y), a, x)[0]
