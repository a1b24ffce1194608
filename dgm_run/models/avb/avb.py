"""AVB: Adversarial Variational Bayes (Mescheder, Nowozin & Geiger 2017, arXiv 1701.04722).

The encoder is implicit, z = f(x, eps) with the noise eps as an input, so q(z|x) has no
density; the KL term of the ELBO is instead estimated by a discriminator T(x, z) trained
with the logistic loss to tell (x, z ~ q(z|x)) from (x, z ~ p(z)). At its optimum
T*(x, z) = log q(z|x) - log p(z) (the paper's proposition 1), so the primal phase
(encoder + decoder) maximises E_q[log p(x|z) - T(x, z)] with T held fixed.

Adaptive contrast (section 3.2): with r(z|x) = N(mu(x), sigma(x)^2) fitted to q's moments,
KL(q || p) = KL(q~ || N(0, I)) + E_q[log r(z|x) - log p(z)], where q~ is the law of the
normalised code z~ = (z - mu) / sigma. T then only has to tell z~ from N(0, I) (a far
easier contrast than q against the prior), and the primal objective becomes
E_q[log p(x|z) - T(x, z~) - log r(z|x) + log p(z)] (section 3.2; the authors'
code computes KL = T + log r - log p and ELBO = log p(x|z) - KL). mu and sigma are
estimated from `ac_samples` encoder draws per x and, as in the authors' code, carry no
gradient.

`encoder: gaussian` turns the same encoder MLP into a plain VAE's (it outputs (mu, logvar)
and takes no noise) with the analytic KL: the baseline with the same networks.
The decoder's likelihood is `model.likelihood` (Bernoulli: data in [0, 1], binarized images and
one-hot points); the KL warm-up weights the primal phase's KL estimate (vae/family.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec, Scatter
from dgm_run.models.avb.discriminator import discriminator
from dgm_run.models.avb.latent_figure import latent_figure
from dgm_run.models.base import ScheduleEntry, frozen
from dgm_run.models.nn import (
    ACTIVATIONS,
    kl_standard_normal,
    mlp,
    normal_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from dgm_run.models.vae.family import LatentDecoder, VAEFamilyConfig
from dgm_run.models.vae.importance import iw_log_likelihood

# Added to the estimated variance of q(z|x) (as in the authors' code): a nearly
# deterministic encoder must not divide by zero.
VAR_FLOOR = 1e-4
# Share of the prior in the defensive mixture proposal of the log-likelihood estimate.
PRIOR_WEIGHT = 0.1


class AVB(LatentDecoder):
    @dataclass
    class Config(VAEFamilyConfig):
        _target_: str = "dgm_run.models.avb.avb.AVB"
        schedule: list[ScheduleEntry] = field(
            default_factory=lambda: [ScheduleEntry("adversary", 2), ScheduleEntry("primal", 1)]
        )
        z_dim: int = 2
        # implicit: z = f(x, eps), eps ~ N(0, I) of noise_dim as an input beside x (AVB);
        # gaussian: the same MLP outputs (mu, logvar), trained as a VAE (schedule: primal only).
        encoder: str = "implicit"
        noise_dim: int = 64
        # Hidden layers of the encoder; the decoder mirrors them.
        hidden: list[int] = field(default_factory=lambda: [64, 64, 64])
        activation: str = "elu"
        # inner_product: T = <f(x), g(z)>; mlp: T = MLP([x, z]).
        discriminator: str = "inner_product"
        discriminator_hidden: list[int] = field(default_factory=lambda: [256, 256])
        # Size of f(x) and g(z) (inner_product only).
        discriminator_features: int = 64
        prior_term: bool = True
        adaptive_contrast: bool = False
        # Encoder draws per x that estimate q(z|x)'s mean and variance: for adaptive contrast
        # in training, and for the proposal of the log-likelihood estimate at evaluation.
        ac_samples: int = 16
        # Importance samples of the log-likelihood estimate at evaluation.
        iw_samples: int = 1000

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "z_dim", "noise_dim", "discriminator_features", "iw_samples")
            check(
                self.ac_samples >= 2,
                "ac_samples",
                f"must be >= 2: q(z|x)'s variance is estimated from them (got {self.ac_samples})",
            )
            check(len(self.hidden) > 0, "hidden", "must be one or more positive layer sizes (got [])")
            check_sizes(self, "hidden")
            check_sizes(self, "discriminator_hidden")
            check_choice(self, "encoder", ("implicit", "gaussian"))
            check_choice(self, "discriminator", ("inner_product", "mlp"))
            check_choice(self, "activation", tuple(ACTIVATIONS))
            check(
                self.encoder == "implicit" or not self.adaptive_contrast, "adaptive_contrast", "needs encoder=implicit"
            )

    phases = ("adversary", "primal")

    @property
    def required_phases(self) -> tuple[str, ...]:
        """encoder=gaussian has an analytic KL and no discriminator: nothing for an adversary to train."""
        return self.phases if self.implicit else ("primal",)

    @property
    def label(self) -> str:
        return f"AVB (encoder={self.cfg.encoder})"

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.implicit = cfg.encoder == "implicit"
        first = cfg.hidden[0]
        # The first layer W [x; eps] + b split as (W_x x + b) + W_eps eps, so that several
        # draws of eps per x reuse x's part (the bulk of the work for images).
        self.enc_x = nn.Linear(self.x_dim, first)
        self.enc_noise = nn.Linear(cfg.noise_dim, first, bias=False) if self.implicit else None
        out = cfg.z_dim if self.implicit else 2 * cfg.z_dim
        self.enc_tail = nn.Sequential(ACTIVATIONS[cfg.activation](), mlp(first, cfg.hidden[1:], out, cfg.activation))
        self.decoder = mlp(cfg.z_dim, cfg.hidden[::-1], self.x_dim * self.head.outputs_per_dim, cfg.activation)
        self.discriminator = discriminator(self.x_dim, cfg) if self.implicit else None

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        if phase == "adversary":
            return [] if self.discriminator is None else list(self.discriminator.parameters())
        skip = set() if self.discriminator is None else {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # ------------------------------------------------------------- encoder
    def gaussian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of the gaussian encoder, each (B, Z); x flat."""
        mu, logvar = self.enc_tail(self.enc_x(x)).chunk(2, dim=-1)
        return mu, logvar

    def encode(self, x: Tensor, n: int) -> Tensor:
        """n codes z ~ q(z|x) per x, shape (n, B, Z); x flat (B, D)."""
        if not self.implicit:
            mu, logvar = self.gaussian(x)
            return reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape))
        eps = torch.randn(n, len(x), self.cfg.noise_dim, device=x.device, dtype=x.dtype)
        return self.enc_tail(self.enc_x(x) + self.enc_noise(eps))

    @torch.no_grad()
    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z|x), each (B, Z), estimated from `ac_samples` fresh draws.

        Fresh draws, independent of the codes the moments are then applied to, and no
        gradient (as in the authors' code): r(z|x) is a fixed reference distribution."""
        z = self.encode(x, self.cfg.ac_samples)
        return z.mean(0), torch.log(z.var(0) + VAR_FLOOR)

    def contrast(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The discriminator's input and log r(z|x) - log p(z) (..., B) for codes z (..., B, Z).

        Adaptive contrast: z~ = (z - mu) / sigma with r = N(mu, sigma^2) fitted to q(z|x);
        otherwise z itself with r = p, so the correction vanishes."""
        if not self.cfg.adaptive_contrast:
            return z, torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        mu, logvar = self.moments(x)
        return (z - mu) * torch.exp(-0.5 * logvar), normal_log_prob(z, mu, logvar) - standard_normal_log_prob(z)

    # -------------------------------------------------------------- losses
    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        x = batch.x.flatten(1)
        if not self.implicit:
            return self.gaussian_elbo(batch, x, *self.gaussian(x))
        if phase == "adversary":
            with torch.no_grad():  # z is data to the discriminator: no gradient reaches the encoder
                z_q, _ = self.contrast(x, self.encode(x, 1)[0])
            return self.adversary_loss(x, z_q)
        # One code per x, as in the paper; the moments of adaptive contrast take their own draws.
        z = self.encode(x, 1)[0]
        z_in, log_r_over_p = self.contrast(x, z)
        with frozen(self.discriminator):  # T is held fixed: gradients pass through z only
            t = self.discriminator(x, z_in)
        kl = t + log_r_over_p  # the adversarial estimate of KL(q(z|x) || p(z)), (B,)
        return self.elbo_terms(batch, -self.head.log_prob(self.decoder(z), x), kl)

    def adversary_loss(self, x: Tensor, z_q: Tensor) -> dict[str, Tensor]:
        """Logistic loss of T on codes z_q (B, Z) of q (label 1) against as many of N(0, I) (label 0)."""
        t_q = self.discriminator(x, z_q)
        t_p = self.discriminator(x, torch.randn_like(z_q))
        loss = F.softplus(-t_q) + F.softplus(t_p)
        return {"loss": loss.mean(), "t_q": t_q.mean(), "t_p": t_p.mean()}

    # ---------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per-example metrics over `ac_samples` draws z ~ q(z|x):

        - log_likelihood: the importance-sampling estimate of `log_likelihood`;
        - elbo (encoder=gaussian): E[log p(x|z)] - KL with the KL analytic, a lower bound on log p(x);
          elbo_estimate (encoder=implicit): the same with AVB's estimate of the KL, T + log r - log p, only as
          good as the discriminator and no bound: it can exceed log p(x), so it is not named elbo;
        - recon_error: images, the mean per-pixel -log p(x|z) (nats; the cross-entropy when Bernoulli);
          other data (one-hot points), the share of draws whose decoded argmax is not x's one.
        """
        x = x.flatten(1)
        z = self.encode(x, self.cfg.ac_samples)  # (K, B, Z)
        out = self.decoder(z)
        log_px = self.head.log_prob(out, x)
        if self.implicit:
            z_in, log_r_over_p = self.contrast(x, z)
            kl = (self.discriminator(x, z_in) + log_r_over_p).mean(0)
            mu, logvar = self.moments(x)
        else:
            mu, logvar = self.gaussian(x)
            kl = kl_standard_normal(mu, logvar)
        if self.spec.is_image:
            recon_error = -log_px.mean(0) / self.x_dim
        else:
            recon_error = (self.head.location(out).argmax(-1) != x.argmax(-1)).float().mean(0)
        return {
            "log_likelihood": self.log_likelihood(x, mu, logvar),
            "elbo_estimate" if self.implicit else "elbo": log_px.mean(0) - kl,
            "recon_error": recon_error,
        }

    def log_likelihood(self, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """Importance-sampling estimate of log p(x), (B,): log 1/k sum_i p(x|z_i) p(z_i) / pi(z_i),
        z_i ~ pi(z|x) = (1 - w) N(mu, sigma^2) + w N(0, I), w = PRIOR_WEIGHT.

        Why it is honest: pi is a proper density we can evaluate, fixed before its k draws are
        taken (its moments come from separate encoder draws, or are the gaussian encoder's), so
        the mean weight is an unbiased estimate of p(x) and, by Jensen, the estimate of
        log p(x) is low in expectation: it never credits the model with more than it has.
        It uses only the decoder and the prior, never T, so a wrong discriminator cannot
        inflate it. The prior's share bounds every weight by p(x|z) / w (the defensive
        mixture of Hesterberg 1995), so tails of q that the Gaussian misses cost variance,
        not bias. For encoder=gaussian, mu and sigma are q's own: the same estimator, so the
        two encoders are compared on equal terms.
        """

        def log_weights(n: int) -> Tensor:
            from_prior = torch.rand(n, len(x), 1, device=x.device) < PRIOR_WEIGHT
            z = torch.where(
                from_prior,
                torch.randn(n, *mu.shape, device=x.device, dtype=mu.dtype),
                reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape)),
            )  # (n, B, Z)
            log_prior = standard_normal_log_prob(z)
            log_pi = torch.logaddexp(
                math.log1p(-PRIOR_WEIGHT) + normal_log_prob(z, mu, logvar), math.log(PRIOR_WEIGHT) + log_prior
            )
            return self.head.log_prob(self.decoder(z), x) + log_prior - log_pi

        return iw_log_likelihood(log_weights, self.cfg.iw_samples, len(x), x.device)

    @torch.no_grad()
    def figures(self, x: Tensor, y: Tensor) -> dict[str, Scatter]:
        """Codes of test points coloured by label, PCA-projected beyond two dimensions (latent_figure.py)."""
        return {"latent": latent_figure(self.encode, x, y, self.spec.is_image)}

    def code(self, x: Tensor) -> Tensor:
        """One draw z ~ q(z|x) per x: what reconstructions decode."""
        return self.encode(x, 1)[0]

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        """One code per x, for TensorBoard's projector."""
        return self.code(x.flatten(1))
