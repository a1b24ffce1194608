"""The VAE's bound and its importance-weighted log-likelihood estimate."""

from __future__ import annotations

import math

import torch

from dgm_run.data.base import DataSpec
from dgm_run.models.vae import VAE

SPEC = DataSpec(shape=(1, 4, 4), n_classes=10, is_image=True, n_train=100)


def test_iw_estimate_brackets_and_tightens_the_elbo():
    torch.manual_seed(0)
    model = VAE(VAE.Config(z_dim=3, hidden=[16], iw_samples=1), SPEC)
    x = torch.bernoulli(torch.full((4000, 1, 4, 4), 0.3))
    y = torch.zeros(4000, dtype=torch.long)
    one = model.evaluate(x, y)
    # k = 1: the estimate is the single-sample ELBO, equal in expectation to the analytic-KL ELBO.
    diff = one["log_likelihood"] - one["elbo"]
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    model.cfg.iw_samples = 64
    many = model.evaluate(x, y)
    # k = 64: a strictly tighter bound on average (Burda et al. 2016).
    assert many["log_likelihood"].mean() > one["elbo"].mean() + 0.05


def test_loss_terms_add_up_and_images_have_the_data_shape():
    torch.manual_seed(0)
    model = VAE(VAE.Config(z_dim=3, hidden=[16]), SPEC)
    from dgm_run.data.base import Batch

    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5))
    terms = model.loss("elbo", Batch(x=x))
    assert torch.allclose(terms["loss"], terms["recon"] + terms["kl_z"])
    assert terms["kl_z"] >= 0 and terms["recon"] > 0
    for images in (model.sample(5), model.reconstruct(x)):
        assert images.shape[1:] == (1, 4, 4) and images.min() >= 0 and images.max() <= 1
