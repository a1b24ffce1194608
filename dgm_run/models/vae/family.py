"""What the models of the VAE family (VAE, β-VAE, CVAE, AVB, and under semi_supervised/ M2, ADGM, SDGM)
share: the likelihood head, the KL warm-up and the ELBO's loss terms; `LatentDecoder`, a model with one code
z ~ N(0, I) and a decoder, adds samples, reconstructions and the pictures of its latent space.

- The KL warm-up of Sønderby et al. 2016: the KL terms weighted by min(epochs done /
  `model.kl_warmup_epochs`, 1), computed on the device from the trainer's Progress, so the step
  stays capturable; off (0) the losses are computed exactly as without the option.
- The ELBO's loss terms (`elbo_terms`, and `gaussian_elbo` for a Gaussian q(z|x) against N(0, I)).
- Likelihood heads are in likelihoods.py, importance weights in importance.py, the arithmetic of the
  manifold and interpolation grids in latent_grids.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from dgm_run.checks import check, check_choice
from dgm_run.contract import Batch, DataSpec, Grid, Progress
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel, ModelConfig
from dgm_run.models.nn import kl_standard_normal, reparameterize
from dgm_run.models.vae.latent_grids import MANIFOLD_SIDE, interpolations, quantile_plane
from dgm_run.models.vae.likelihoods import LIKELIHOODS, Bernoulli, Gaussian


def warmup_weight(progress: Optional[Progress], epochs: float, start: float, device: torch.device) -> Optional[Tensor]:
    """The KL weight of a linear warm-up over `epochs` epochs from epoch `start`: clamp((epoch - start) /
    epochs, 0, 1), a 0-d tensor computed on the device (no host value, no branch on it). None when the
    warm-up is off (epochs 0); 1 outside training (progress None)."""
    if not epochs:
        return None
    if progress is None:
        return torch.ones((), device=device)
    return ((progress.epoch - start) / epochs).clamp(0.0, 1.0)


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
