"""What M2, ADGM and SDGM share: the semi-supervised objective, its evaluation and its pictures.

Every such model has a classifier q(y|.) and, for an example and a label, a one-sample
log importance weight log w(x, y) = log p(x, y, latents) - log q(latents | x, y). The
objective on a batch is

    labelled:    -log w(x, y)                      + alpha * -log q(y|.)
    unlabelled:  -sum_y q(y|.) log w(x, y) - H(q(y|.))    (y summed out exactly)
                 or a Gumbel-softmax relaxed sample of y in place of the sum,

each part averaged over its examples (`model.reduction=means`), or the data set's sum objective
per example of the batch (`sums`, Kingma's M2 code). With `model.samples` S draws, each example
is repeated S times: independent bounds, averaged (`model.mc_average=bounds`), or the ADGM/SDGM
authors' combination: the unlabelled bound sum_y q̄(y) (1/S sum_s log w_s(x, y)) + H(q̄) with q̄ the
mean of q(y|.) over the draws, and the labelled cross-entropy the mean over the draws of -log q(y|a_s, x)
(`authors`, the ADGM code: ml-lab/auxiliary-deep-generative-models models/adgmssl.py) or that of q̄,
-log q̄(y) (`authors_sdgm`, the SDGM code: larsmaaloee/auxiliary-deep-generative-models, whose
MultinomialLogDensityLayer in lasagne_extensions/layers/density_layers.py averages q over the draws).

`model.kl=analytic` (the authors' ADGM code) takes each Gaussian latent against a standard normal prior
(z; ADGM's a under `p_a=standard`) in closed form in the training bound: -KL(q || N(0, I)) in place of
log p - log q of the draw. The expectation is the same, the variance lower; the evaluation's importance
weights stay sampled.

A subclass computes log w on rows, one per (example, label) pair that `Labels` asks for
(labels.py): given labels, every label (the exact sum, with what does not depend on y
computed once per x) or relaxed one-hot labels. Labelled and unlabelled examples go
through the networks in one pass.

KL warm-up (`model.kl_warmup_epochs`, vae_family.py): the KL part of log w, everything but
log p(x|...) (the latents' log p - log q terms and log p(y)), is multiplied by the warm-up weight
in training, as the VAE's KL is: log w = log p(x|...) + weight * (log p(y) + log p(latents) -
log q(latents|x, y)). The classifier's entropy H(q(y|.)) and the labelled cross-entropy are not
weighted. Evaluation's log w is never weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.labels import Labels
from dgm_run.models.nn import ACTIVATIONS, INIT_SCHEMES, initialize
from dgm_run.models.vae_family import ClassConditional, Gaussian, VAEFamily, VAEFamilyConfig, iw_log_likelihood


def mean_over_draws(t: Tensor, draws: int) -> Tensor:
    """Per example, the mean over `draws` draws of a tensor laid out draw-major, (draws * B, ...) -> (B, ...)."""
    return t.view(draws, -1, *t.shape[1:]).mean(0)


def mean_q_log(logits: Tensor, draws: int) -> Tensor:
    """log q̄(y|.) per example, q̄ = 1/draws sum_s q(y|a_s, x), from logits laid out draw-major."""
    return torch.logsumexp(F.log_softmax(logits, dim=-1).view(draws, -1, logits.shape[-1]), 0) - math.log(draws)


def classifier_terms(
    logits: Tensor, y_l: Tensor, draws: int = 1, cross_entropy_of_mean: bool = False
) -> tuple[Tensor, Tensor]:
    """log q(y|.) of the unlabelled examples and the labelled cross-entropy, from the class logits of every
    row (the len(y_l) labelled rows first, y_l one label per row). draws > 1, the authors' averaging: each
    part holds `draws` draws, draw-major; the unlabelled examples' q is q̄ = 1/draws sum_s q(y|a_s, x), and
    the cross-entropy the mean over the draws of -log q(y|a_s, x), or -log q̄(y) with `cross_entropy_of_mean`."""
    logits_l, logits_u = logits.split([len(y_l), len(logits) - len(y_l)])
    if draws == 1:
        return F.log_softmax(logits_u, dim=-1), F.cross_entropy(logits_l, y_l)
    if cross_entropy_of_mean:
        log_q_l = mean_q_log(logits_l, draws)
        return mean_q_log(logits_u, draws), F.nll_loss(log_q_l, y_l[: len(log_q_l)])
    return mean_q_log(logits_u, draws), F.cross_entropy(logits_l, y_l)


def objective(
    log_w_l: Tensor, log_w_u: Tensor, log_q: Tensor, cls: Tensor, alpha: float, draws: int = 1, sums: bool = False
) -> dict[str, Tensor]:
    """The batch's loss terms from the labelled bounds log w(x, y), (B_l,); the unlabelled ones, (B_u, K)
    for every label (summed under q(y|x)) or (B_u,) for one relaxed label; log q(y|x) of the unlabelled
    examples and the labelled cross-entropy `cls` (classifier_terms, with the same `draws`). draws > 1: the
    bounds hold that many draws, draw-major, averaged per example first (the authors'). sums: the data set's
    sum objective per example, (sum_l (-log w + alpha CE) + sum_u U) / (B_l + B_u); else each part's mean."""
    if draws > 1:
        log_w_l, log_w_u = mean_over_draws(log_w_l, draws), mean_over_draws(log_w_u, draws)
    q = log_q.exp()
    labelled = -log_w_l
    expected = (q * log_w_u).sum(-1) if log_w_u.dim() == 2 else log_w_u
    entropy = -(q * log_q).sum(-1)
    unlabelled = -(expected + entropy)
    if sums:
        n_l, n_u = len(labelled), len(unlabelled)
        loss = (labelled.sum() + unlabelled.sum() + alpha * n_l * cls) / (n_l + n_u)
    else:
        loss = labelled.mean() + unlabelled.mean() + alpha * cls
    return {
        "loss": loss,
        "labelled": labelled.mean(),
        "unlabelled": unlabelled.mean(),
        "cls": cls,
        "entropy": entropy.mean(),
    }


@dataclass
class SemiSupervisedConfig(VAEFamilyConfig):
    z_dim: int = 50
    hidden: list[int] = field(default_factory=lambda: [500])
    activation: str = "softplus"
    # Weight of the classification term on the labelled cross-entropy; null: 0.1 * N / N_l (the papers'
    # alpha = 0.1 N on sums over the data set). With reduction=means it weighs the mean cross-entropy
    # against the mean unlabelled bound; with sums, each labelled digit's against each digit's bound.
    alpha: Optional[float] = None
    # means: the labelled and the unlabelled bounds each averaged over its part of the batch (ADGM/SDGM
    # code); sums: the data set's sum objective per example of the batch (Kingma's M2 code).
    reduction: str = "means"
    # Monte Carlo samples of the latent variables per example in training.
    samples: int = 1
    # How the samples combine: bounds, each draw its own bound, the bounds averaged; authors, the ADGM code's:
    # q(y|.) averaged over the draws for the sum over y, the labelled cross-entropy the mean over the draws;
    # authors_sdgm, the SDGM code's: the cross-entropy that of the averaged q(y|.) (module doc).
    mc_average: str = "bounds"
    # sampled: each latent's log p - log q from its draw; analytic: a Gaussian latent against a standard
    # normal prior as its closed-form KL in the training bound (the authors' ADGM code; module doc).
    kl: str = "sampled"
    # The networks' initial weights (nn.initialize): default (PyTorch's), glorot (the ADGM/SDGM authors'),
    # normal_1e-3 (Kingma's M2 code).
    init: str = "default"
    # exact: sum the unlabelled bound over every y; gumbel: one relaxed sample of y.
    marginalize: str = "exact"
    gumbel_temperature: float = 0.5
    # k of the importance-weighted log-likelihood estimate at evaluation.
    iw_samples: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "z_dim", "samples", "iw_samples")
        check(len(self.hidden) > 0, "hidden", "needs at least one layer")
        check_sizes(self, "hidden")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "marginalize", ("exact", "gumbel"))
        check_choice(self, "reduction", ("means", "sums"))
        check_choice(self, "mc_average", ("bounds", "authors", "authors_sdgm"))
        check(
            self.mc_average == "bounds" or self.marginalize == "exact",
            "mc_average",
            f"{self.mc_average} averages q(y|.) over the draws in the exact sum over y; with marginalize=gumbel "
            "use bounds",
        )
        check_choice(self, "kl", ("sampled", "analytic"))
        check_choice(self, "init", INIT_SCHEMES)
        check(self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0 (got {self.alpha})")
        check(self.gumbel_temperature > 0, "gumbel_temperature", f"must be > 0 (got {self.gumbel_temperature})")


class SemiSupervisedModel(ClassConditional, VAEFamily):
    Config = SemiSupervisedConfig

    def __init__(self, cfg: SemiSupervisedConfig, spec: DataSpec) -> None:
        if not spec.semi_supervised:
            name = type(self).__name__.lower()
            raise UserError(f"model={name} needs labelled data: use data=mnist_100labels or set data.n_labels")
        super().__init__(cfg, spec)
        self.n_classes = spec.n_classes
        # Width of the decoder's output: logits, or a mean and a log-variance per dimension.
        self.x_out_dim = self.x_dim * self.head.outputs_per_dim
        self.alpha = cfg.alpha if cfg.alpha is not None else 0.1 * spec.n_train / spec.n_labels
        self.log_prior_y = -math.log(self.n_classes)
        # Draws averaged per example before the bound (mc_average=authors*); 1: each draw's bound on its own.
        self.draws_averaged = 1 if cfg.mc_average == "bounds" else cfg.samples
        self.cross_entropy_of_mean = cfg.mc_average == "authors_sdgm"

    def initialize(self, gaussians: list[nn.Module], classifier: nn.Module, decoder: nn.Module) -> None:
        """model.init on every network (nn.initialize), given those that end in a Gaussian's mean and
        log-variance, the classifier q(y|.) and the decoder p(x|.), a Gaussian's under likelihood=gaussian."""
        gaussian_x = isinstance(self.head, Gaussian)
        initialize(
            self,
            self.cfg.init,
            self.cfg.activation,
            [*gaussians, *([decoder] if gaussian_x else [])],
            [classifier, *([] if gaussian_x else [decoder])],
        )

    # --------------------------------------------------- what a model defines
    def prepare(self, x: Tensor) -> dict[str, Any]:
        """Per-example draws that do not depend on y, shared by every label (ADGM: a ~ q(a|x))."""
        return {}

    def log_weight(
        self,
        x: Tensor,
        labels: Labels,
        ctx: dict[str, Any],
        kl_weight: Optional[Tensor] = None,
        analytic_kl: bool = False,
    ) -> Tensor:
        """log p(x, y, latents) - log q(latents|x, y) for one sample, per row of `labels`: (rows,);
        with `kl_weight`, all but log p(x|...) weighted by it (vae_family.importance_log_weight). With
        `analytic_kl` (model.kl=analytic, training only), the Gaussian latents under a standard normal prior
        enter as -KL in closed form: the training bound's estimate, no longer an importance weight."""
        raise NotImplementedError

    def class_logits(self, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Logits of q(y|.) for the sample in ctx, (B, K)."""
        raise NotImplementedError

    def classify(self, x: Tensor) -> Tensor:
        """q(y|x) for evaluation, (B, K)."""
        raise NotImplementedError

    def encode_z(self, x: Tensor, y: Tensor) -> Tensor:
        """The mean of q(z|x, y), (B, z)."""
        raise NotImplementedError

    def generate(self, z: Tensor, y: Tensor) -> Tensor:
        """The mean of p(x|y, z), (B, D); other latents at their means."""
        raise NotImplementedError

    def log_px(self, out: Tensor, x: Tensor) -> Tensor:
        """log p(x|...) from the decoder's output, summed over dimensions."""
        return self.head.log_prob(out, x)

    def mean_x(self, out: Tensor) -> Tensor:
        """The mean of p(x|...) from the decoder's output."""
        return self.head.mean(out)

    # ------------------------------------------------------------- objective
    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        repeat = self.cfg.samples
        x_l = batch.x_labelled.flatten(1).repeat(repeat, 1)
        y_l = batch.y_labelled.repeat(repeat)
        x_u = batch.x.flatten(1).repeat(repeat, 1)

        # Labelled examples first, then unlabelled: one pass through each network.
        x = torch.cat([x_l, x_u])
        ctx = self.prepare(x)
        log_q, cls = classifier_terms(self.class_logits(x, ctx), y_l, self.draws_averaged, self.cross_entropy_of_mean)
        if self.cfg.marginalize == "exact":
            labels = Labels(self.n_classes, given=y_l, every=len(x_u))
        else:
            labels = Labels(self.n_classes, given=y_l, soft=F.gumbel_softmax(log_q, tau=self.cfg.gumbel_temperature))
        weight = self.kl_weight(batch, x.device)
        log_w_l, log_w_u = labels.split(self.log_weight(x, labels, ctx, weight, self.cfg.kl == "analytic"))
        terms = objective(log_w_l, log_w_u, log_q, cls, self.alpha, self.draws_averaged, self.cfg.reduction == "sums")
        if weight is not None:
            terms["kl_weight"] = weight
        return terms

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.classify(x.flatten(1))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"log_likelihood": self.log_likelihood(x.flatten(1))}

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = log sum_y E_q[w(x, y)], estimated with iw_samples draws per label, (B,)."""

        def log_weights(n: int) -> Tensor:
            xr = x.repeat(n, 1)
            log_w_every = self.log_weight(xr, Labels(self.n_classes, every=len(xr)), self.prepare(xr))
            return log_w_every.view(n, len(x), self.n_classes)

        # A row per example and label.
        return iw_log_likelihood(log_weights, self.cfg.iw_samples, len(x) * self.n_classes, x.device)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Class-conditional samples, the labels cycling 0, 1, ..., K-1 along the grid."""
        device = self.device
        y = torch.arange(n, device=device) % self.n_classes
        return self.generate(torch.randn(n, self.cfg.z_dim, device=device), y).view(n, *self.spec.shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        y = self.classify(flat).argmax(-1)
        return self.generate(self.encode_z(flat, y), y).view_as(x)

    def decode_style(self, z: Tensor, y: Tensor) -> Tensor:
        return self.generate(z, y)

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        """The code of each digit for the projector: the mean of q(z|x, y) at the predicted label."""
        flat = x.flatten(1)
        return self.encode_z(flat, self.classify(flat).argmax(-1))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
