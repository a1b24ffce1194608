"""IWAE: the importance-weighted autoencoder of Burda, Grosse & Salakhutdinov 2016 (arXiv 1509.00519).

The VAE's networks (vae.py), trained on a tighter bound: with k draws z_i ~ q(z|x),

    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),     loss = -log (1/k) Σ_i w_i,

a lower bound on log p(x) that grows with k and is the VAE's ELBO at k = 1 (`model.k`; the paper trains
with k = 5 and k = 50). The KL warm-up weights log p(z_i) - log q(z_i|x) in each w_i. Evaluation is the
VAE's: the one-draw ELBO and the importance-weighted log-likelihood with `iw_samples` draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dgm_run.checks import check_positive
from dgm_run.contract import Batch
from dgm_run.models.nn import normal_log_prob, reparameterize, standard_normal_log_prob
from dgm_run.models.vae.importance import importance_log_weight
from dgm_run.models.vae.vae import VAE


class IWAE(VAE):
    @dataclass
    class Config(VAE.Config):
        _target_: str = "dgm_run.models.vae.iwae.IWAE"
        # Draws of z per example in the training bound.
        k: int = 5

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "k")

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        x = batch.x.flatten(1)
        mu, logvar = self.encode(x)
        k = self.cfg.k
        z = reparameterize(mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape))  # (k, B, Z)
        kl_weight = self.kl_weight(batch, x.device)
        log_px = self.head.log_prob(self.decoder(z), x)
        log_w = importance_log_weight(
            log_px, [standard_normal_log_prob(z)], [normal_log_prob(z, mu, logvar)], kl_weight
        )
        bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
        terms = {"loss": -bound.mean(), "elbo": log_w.mean(), "recon": -log_px.mean()}
        if kl_weight is not None:
            terms["kl_weight"] = kl_weight
        return terms
