"""The toolkit of the VAE family (VAE, β-VAE, M2, ADGM, SDGM, M1+M2, AVB): what their models share.

- Likelihood heads: p(x|.) from a decoder's output, `bernoulli` (logits, data in [0, 1]) or
  `gaussian` (a mean and a log-variance per dimension: a learnt diagonal variance), chosen by
  `model.likelihood`.
- The KL warm-up of Sønderby et al. 2016: the KL terms weighted by min(epochs done /
  `model.kl_warmup_epochs`, 1), computed on the device from the trainer's Progress, so the step
  stays capturable; off (0) the losses are computed exactly as without the option.
- The ELBO's loss terms (`elbo_terms`, and `gaussian_elbo` for a Gaussian q(z|x) against N(0, I)).
- The importance-weighted log-likelihood, log 1/k sum_i w_i, with the k draws taken in chunks.
- Decoder-based samples and reconstructions (`LatentDecoder`); the class-conditional models'
  analogies grid and their per-class accuracy (`ClassConditional`).
- Both kinds' pictures of the latent space, the manifold and the interpolations (latent_grids.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import Tensor

from dgm_run.checks import check, check_choice
from dgm_run.contract import Batch, DataSpec, Grid, Progress
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel, ModelConfig
from dgm_run.models.latent_grids import LABEL_MANIFOLD_SIDE, MANIFOLD_SIDE, interpolations, quantile_plane
from dgm_run.models.nn import bernoulli_log_prob, chunks, kl_standard_normal, normal_log_prob, reparameterize


# --------------------------------------------------------------------------- likelihood heads
class Bernoulli:
    """p(x|.) Bernoulli, the decoder's output its logits: data in [0, 1] (binarized pixels, one-hot points)."""

    outputs_per_dim = 1

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return bernoulli_log_prob(out, x)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def location(self, out: Tensor) -> Tensor:
        """Scores that order the dimensions as the means do (for an argmax): the logits."""
        return out


class Gaussian:
    """p(x|.) = N(mu, diag(exp(logvar))), the decoder's output [mu, logvar]: continuous data."""

    outputs_per_dim = 2

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        mu, logvar = out.chunk(2, dim=-1)
        return normal_log_prob(x.expand_as(mu), mu, logvar)

    def mean(self, out: Tensor) -> Tensor:
        return out.chunk(2, dim=-1)[0]

    location = mean


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}


# --------------------------------------------------------------------------- functions
def warmup_weight(progress: Optional[Progress], epochs: float, start: float, device: torch.device) -> Optional[Tensor]:
    """The KL weight of a linear warm-up over `epochs` epochs from epoch `start`: clamp((epoch - start) /
    epochs, 0, 1), a 0-d tensor computed on the device (no host value, no branch on it). None when the
    warm-up is off (epochs 0); 1 outside training (progress None)."""
    if not epochs:
        return None
    if progress is None:
        return torch.ones((), device=device)
    return ((progress.epoch - start) / epochs).clamp(0.0, 1.0)


def iw_log_likelihood(log_weights: Callable[[int], Tensor], k: int, rows_each: int, device: torch.device) -> Tensor:
    """log 1/k sum exp(log w) over k importance draws, (B,). `log_weights(n)` returns n draws' log
    weights, (n, B, ...); every entry after the example axis (e.g. each label's) is a term of the sum
    too. The draws are taken in chunks sized by `nn.chunks` for `rows_each` network rows per draw."""
    log_w = torch.cat([log_weights(n) for n in chunks(k, rows_each, device)])
    return torch.logsumexp(log_w.transpose(0, 1).flatten(1), dim=1) - math.log(k)


def importance_log_weight(
    log_px: Tensor, log_p: Sequence[Union[Tensor, float]], log_q: Sequence[Tensor], kl_weight: Optional[Tensor] = None
) -> Tensor:
    """log w = log p(x|.) + sum log_p - sum log_q, added left to right. With `kl_weight` (the warm-up),
    log p(x|.) + kl_weight * (sum log_p - sum log_q): every term but log p(x|.) is the KL part."""
    if kl_weight is None:
        total = log_px
        for term in log_p:
            total = total + term
        for term in log_q:
            total = total - term
        return total
    kl_part = log_p[0]
    for term in log_p[1:]:
        kl_part = kl_part + term
    for term in log_q:
        kl_part = kl_part - term
    return log_px + kl_weight * kl_part


# --------------------------------------------------------------------------- models
@dataclass
class VAEFamilyConfig(ModelConfig):
    # p(x|...): bernoulli for data in [0, 1] (binarized pixels), gaussian (diagonal, learnt variance)
    # for continuous data.
    likelihood: str = "bernoulli"
    # KL warm-up (Sønderby et al. 2016): the KL terms weighted from 0 to 1 linearly over this many epochs; 0: off.
    kl_warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "likelihood", tuple(LIKELIHOODS))
        check(self.kl_warmup_epochs >= 0, "kl_warmup_epochs", f"must be >= 0 (got {self.kl_warmup_epochs})")


class VAEFamily(GenerativeModel):
    """A model of the family: its likelihood head `head`, the warm-up weight, the ELBO's loss terms."""

    Config = VAEFamilyConfig
    # β of a β-VAE: a constant factor on the KL term of `elbo_terms` (None: 1, and no multiplication).
    beta: Optional[float] = None
    # The epoch at which the KL warm-up starts (M1+M2's M2 starts with its phase).
    warmup_from: float = 0.0

    def __init__(self, cfg: VAEFamilyConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.head: Union[Bernoulli, Gaussian] = LIKELIHOODS[cfg.likelihood]()
        if cfg.likelihood == "bernoulli" and not spec.unit_interval:  # other data is a user's mistake
            name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(self).__name__).lower()  # BetaVAE: beta_vae
            raise UserError(
                f"model={name} has a Bernoulli likelihood and needs data in [0, 1] (images, one-hot "
                "points); this data has other values (a 2-D toy? try model=ddgm or "
                "model.likelihood=gaussian)"
            )
        self.x_dim = math.prod(spec.shape)

    def kl_weight(self, batch: Batch, device: torch.device) -> Optional[Tensor]:
        """The warm-up weight of the KL terms at this batch (see `warmup_weight`); None when off."""
        return warmup_weight(batch.progress, self.cfg.kl_warmup_epochs, self.warmup_from, device)

    def elbo_terms(self, batch: Batch, recon: Tensor, kl: Tensor, kl_name: str = "kl") -> dict[str, Tensor]:
        """Loss terms from per-example -log p(x|z) and KL, (B,): loss = mean(recon + beta * warm-up * kl),
        the KL reported unweighted; `kl_weight`, the warm-up weight, when the warm-up is on."""
        warmup = self.kl_weight(batch, recon.device)
        weight = warmup
        if self.beta is not None:
            weight = self.beta if warmup is None else self.beta * warmup
        loss = recon + kl if weight is None else recon + weight * kl
        terms = {"loss": loss.mean(), "recon": recon.mean(), kl_name: kl.mean()}
        if warmup is not None:
            terms["kl_weight"] = warmup
        return terms


class LatentDecoder(VAEFamily):
    """A model with one code z ~ N(0, I) of `cfg.z_dim` and a decoder p(x|z) (`self.decoder`, an MLP):
    its samples and reconstructions are decoder means."""

    def code(self, x: Tensor) -> Tensor:
        """The code of flat x whose decoding is its reconstruction, (B, Z)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) for codes z (B, Z), shaped like the data."""
        return self.head.mean(self.decoder(z)).view(len(z), *self.spec.shape)

    def gaussian_elbo(
        self, batch: Batch, x: Tensor, mu: Tensor, logvar: Tensor, kl_name: str = "kl"
    ) -> dict[str, Tensor]:
        """The VAE loss: one draw z ~ N(mu, exp(logvar)) decoded, the analytic KL to N(0, I)."""
        recon = -self.head.log_prob(self.decoder(reparameterize(mu, logvar)), x)
        return self.elbo_terms(batch, recon, kl_standard_normal(mu, logvar), kl_name)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.decode(torch.randn(n, self.cfg.z_dim, device=self.decoder[0].weight.device))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.code(x.flatten(1))).view_as(x)

    @torch.no_grad()
    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """`manifold` for a 2-D code: the decodings of a MANIFOLD_SIDE-square grid of the prior's quantiles,
        rows along z[0], columns along z[1]; `interpolations`: the decodings of straight lines between the
        codes of test digits of different labels (latent_grids.py; AVB's codes are one draw of q(z|x))."""
        grids = {}
        if self.cfg.z_dim == 2:
            grids["manifold"] = Grid(self.decode(quantile_plane(MANIFOLD_SIDE, x.device)), nrow=MANIFOLD_SIDE)
        return {**grids, **interpolations(x, y, self.code, lambda z, _: self.decode(z))}


class ClassConditional:
    """Mixin of the class-conditional models (M2, ADGM, SDGM, M1+M2), before GenerativeModel in the bases:
    per-class accuracy, a sample grid one column per label, the analogies, manifold and interpolations grids.
    `latent(x)` is a test image's style (its code at the predicted label); `decode_style(z, y)` decodes codes."""

    per_class_metrics = ("accuracy",)
    needs_labels = True
    spec: DataSpec
    cfg: Any

    def latent(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_style(self, z: Tensor, y: Tensor) -> Tensor:
        """Images (B, ...) of codes z (B, Z) with labels y (B,)."""
        raise NotImplementedError

    @property
    def grid_columns(self) -> int:
        return self.spec.n_classes  # class-conditional samples: one column per label

    @torch.no_grad()
    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """`analogies`; `manifold/<label>` for a 2-D style (`manifolds`); `interpolations`: each row the
        style moving in a straight line from its left test digit's to its right one's (of another label),
        every point decoded with the left digit's label (latent_grids.py)."""
        k = self.spec.n_classes
        return {
            "analogies": Grid(self.analogies(x[:k]), nrow=k + 1),
            **self.manifolds(x.device),
            **interpolations(x, y, self.latent, self.decode_style),
        }

    def manifolds(self, device: torch.device) -> dict[str, Grid]:
        """Kingma et al. 2014, figure 1a: per label, the decodings of a LABEL_MANIFOLD_SIDE-square grid of
        the prior's quantiles with that label, rows along z[0], columns along z[1]; none unless z is 2-D."""
        if self.cfg.z_dim != 2:
            return {}
        z = quantile_plane(LABEL_MANIFOLD_SIDE, device)
        k = self.spec.n_classes
        labels = torch.arange(k, device=device).repeat_interleave(len(z))
        images = self.decode_style(z.repeat(k, 1), labels).view(k, len(z), *self.spec.shape)
        return {f"manifold/{label}": Grid(images[label], nrow=LABEL_MANIFOLD_SIDE) for label in range(k)}

    def analogies(self, x: Tensor) -> Tensor:
        """Per test digit: the digit, then its style decoded with each label. (B * (K + 1), C, H, W)."""
        z = self.latent(x)
        k = self.spec.n_classes
        y = torch.arange(k, device=x.device).repeat(len(x))
        generated = self.decode_style(z.repeat_interleave(k, 0), y).view(len(x), k, *x.shape[1:])
        return torch.cat([x.float().unsqueeze(1), generated], 1).flatten(0, 1)
