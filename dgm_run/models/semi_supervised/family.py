"""What M2, ADGM and SDGM share: their config, the steps of their loss (objective.py holds the math),
their evaluation (test predictions, the importance-weighted log-likelihood) and their pictures.

Each model's file writes its own `loss` from these steps, in the order of the bound:

    rows = self.stack(batch)                       labelled examples first, then unlabelled, `samples` times
    log_q, cross_entropy = self.classifier(...)    q(y|.) of the unlabelled rows, the labelled cross-entropy
    labels = self.label_rows(rows, log_q)          the (example, label) pairs log w is computed on
    log_w = self.log_weight(rows.x, labels, ...)   the model's own: its generative and inference model
    return self.bound(labels, log_w, ...)          objective.objective: the loss terms
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.nn import ACTIVATIONS, INIT_SCHEMES, initialize
from dgm_run.models.semi_supervised.class_conditional import ClassConditional
from dgm_run.models.semi_supervised.labels import Labels
from dgm_run.models.semi_supervised.objective import Stacked, classifier_terms, objective, stack
from dgm_run.models.vae.family import VAEFamily, VAEFamilyConfig
from dgm_run.models.vae.importance import iw_log_likelihood
from dgm_run.models.vae.likelihoods import Gaussian


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

    # ------------------------------------------------- what each model defines
    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError  # in each model's file, from the steps below

    def every_label_log_weight(self, x: Tensor) -> Tensor:
        """One draw's log w(x, y) for every example of x and every label, (B * K,), example-major."""
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

    # ---------------------------------------------------- the steps of a loss
    def stack(self, batch: Batch) -> Stacked:
        """The batch's rows for one pass through the networks, each example model.samples times."""
        return stack(batch, self.cfg.samples)

    def classifier(self, logits: Tensor, rows: Stacked) -> tuple[Tensor, Tensor]:
        """log q(y|.) of the unlabelled rows and the labelled cross-entropy from every row's class logits,
        the draws combined as model.mc_average says (objective.classifier_terms)."""
        return classifier_terms(logits, rows.y_labelled, self.draws_averaged, self.cross_entropy_of_mean)

    def label_rows(self, rows: Stacked, log_q: Tensor) -> Labels:
        """The (example, label) rows log w is computed on: each labelled example with its label, then each
        unlabelled one with every label (the exact sum) or, with marginalize=gumbel, with one relaxed label
        drawn from q(y|.)."""
        if self.cfg.marginalize == "exact":
            return Labels(self.n_classes, given=rows.y_labelled, every=rows.n_unlabelled)
        soft = F.gumbel_softmax(log_q, tau=self.cfg.gumbel_temperature)
        return Labels(self.n_classes, given=rows.y_labelled, soft=soft)

    def bound(
        self, labels: Labels, log_w: Tensor, log_q: Tensor, cross_entropy: Tensor, kl_weight: Optional[Tensor]
    ) -> dict[str, Tensor]:
        """The loss terms from the rows' log w (objective.objective); `kl_weight` among them when the KL
        warm-up is on."""
        log_w_l, log_w_u = labels.split(log_w)
        terms = objective(
            log_w_l, log_w_u, log_q, cross_entropy, self.alpha, self.draws_averaged, self.cfg.reduction == "sums"
        )
        if kl_weight is not None:
            terms["kl_weight"] = kl_weight
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
            return self.every_label_log_weight(x.repeat(n, 1)).view(n, len(x), self.n_classes)

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
