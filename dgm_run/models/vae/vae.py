"""VAE (M1): Kingma & Welling 2014 (arXiv 1312.6114).

Generative model:   p(z) = N(0, I),   p(x|z) = Bernoulli (or Gaussian) from an MLP on z
Inference model:    q(z|x) = N(μ(x), diag σ²(x))

    loss = -log p(x|z) + KL(q(z|x) || p(z)),   one draw z ~ q(z|x), the KL in closed form (the negative ELBO)

Kingma & Welling 2014 (arXiv 1312.6114); as M1 in Kingma et al. 2014 (arXiv 1406.5298):
784-500-500-50 with softplus units. The test log-likelihood is the importance-weighted
estimate log 1/k sum_i p(x, z_i) / q(z_i|x) of Burda et al. 2016 with k = iw_samples.
The likelihood head, the KL warm-up, samples and reconstructions are the family's (family.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dgm_run.checks import check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec
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


class VAE(LatentDecoder):
    @dataclass
    class Config(VAEFamilyConfig):
        _target_: str = "dgm_run.models.vae.vae.VAE"
        z_dim: int = 50
        hidden: list[int] = field(default_factory=lambda: [500, 500])
        activation: str = "relu"
        # k of the importance-weighted log-likelihood estimate at evaluation.
        iw_samples: int = 100

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "z_dim", "iw_samples")
            check_sizes(self, "hidden")
            check_choice(self, "activation", tuple(ACTIVATIONS))

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.encoder = mlp(self.x_dim, cfg.hidden, 2 * cfg.z_dim, cfg.activation)
        self.decoder = mlp(cfg.z_dim, cfg.hidden[::-1], self.x_dim * self.head.outputs_per_dim, cfg.activation)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def code(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        """The mean of q(z|x), (B, Z): the codes TensorBoard's projector shows."""
        return self.code(x)

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        x = batch.x.flatten(1)
        mu, logvar = self.encode(x)
        return self.gaussian_elbo(batch, x, mu, logvar, kl_name="kl_z")

    def elbo(self, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """One-sample ELBO with the analytic KL, (B,); x flat, (mu, logvar) = encode(x)."""
        return self.head.log_prob(self.decoder(reparameterize(mu, logvar)), x) - kl_standard_normal(mu, logvar)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        x = x.flatten(1)
        mu, logvar = self.encode(x)
        return {"elbo": self.elbo(x, mu, logvar), "log_likelihood": self.log_likelihood(x, mu, logvar)}

    def log_likelihood(self, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """Importance-weighted estimate of log p(x) with iw_samples draws from q(z|x), shape (B,)."""

        def log_weights(n: int) -> Tensor:
            z = reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape))  # (n, B, z)
            return self.head.log_prob(self.decoder(z), x) + standard_normal_log_prob(z) - normal_log_prob(z, mu, logvar)

        return iw_log_likelihood(log_weights, self.cfg.iw_samples, len(x), x.device)
