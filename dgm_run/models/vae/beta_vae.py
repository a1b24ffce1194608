"""β-VAE (Higgins et al. 2017, ICLR, "β-VAE: learning basic visual concepts with a constrained
variational framework"): the VAE with its KL term weighted by β,

    loss = -E_q[log p(x|z)] + β KL(q(z|x) || p(z)),

β > 1 trading reconstruction for a code closer to the factorised prior (a more disentangled
one); β = 1 is the VAE. The KL warm-up (`kl_warmup_epochs`) multiplies β. Evaluation reports
the VAE's metrics (the ELBO at β = 1, the importance-weighted log-likelihood) and image grids; the
`traversal` grid beside them shows what each latent dimension has learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgm_run.checks import check
from dgm_run.contract import DataSpec, Grid
from dgm_run.models.nn import kl_standard_normal
from dgm_run.models.vae.vae import VAE

# The traversal: at most this many latent dimensions (rows), each set to TRAVERSAL_STEPS values
# evenly spaced in [-TRAVERSAL_RANGE, TRAVERSAL_RANGE] (columns) while the others stay fixed.
TRAVERSAL_ROWS = 10
TRAVERSAL_STEPS = 9
TRAVERSAL_RANGE = 3.0
# Test images whose mean KL per dimension orders the rows.
RANKING_IMAGES = 1000


class BetaVAE(VAE):
    @dataclass
    class Config(VAE.Config):
        _target_: str = "dgm_run.models.vae.beta_vae.BetaVAE"
        # The weight of the KL term (1: the VAE).
        beta: float = 4.0

        def __post_init__(self) -> None:
            super().__post_init__()
            check(self.beta >= 0, "beta", f"must be >= 0 (got {self.beta})")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.beta = cfg.beta  # the family's factor on the KL term (family.VAEFamily.elbo_terms)

    @torch.no_grad()
    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """The VAE's grids (manifold, interpolations) and `traversal`, the latent traversal of the first
        test image: its code (the mean of q(z|x)) with one dimension at a time set to each of
        TRAVERSAL_STEPS values in [-3, 3], the others fixed; one row per dimension, the TRAVERSAL_ROWS
        dimensions with the largest mean KL over the test images first (dimensions that have collapsed
        to the prior decode alike whatever their value)."""
        mu, logvar = self.encode(x[:RANKING_IMAGES].flatten(1))
        kl_per_dim = kl_standard_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)  # each dimension's own
        dims = kl_per_dim.argsort(descending=True)[:TRAVERSAL_ROWS]
        values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, TRAVERSAL_STEPS, device=mu.device, dtype=mu.dtype)
        z = mu[0].repeat(len(dims), TRAVERSAL_STEPS, 1)  # (rows, steps, Z)
        for row, dim in enumerate(dims.tolist()):
            z[row, :, dim] = values
        return {**super().images(x, y), "traversal": Grid(self.decode(z.flatten(0, 1)), nrow=TRAVERSAL_STEPS)}
