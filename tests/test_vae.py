"""The VAE's bound and its importance-weighted log-likelihood estimate."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_run.data.base import DataSpec
from dgm_run.models.vae.vae import VAE

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


def test_gaussian_likelihood_models_continuous_data_and_bernoulli_refuses_it():
    from dgm_run.errors import UserError
    from dgm_run.models.vae.likelihoods import Gaussian

    spec = DataSpec(shape=(6,), n_classes=1, is_image=False, n_train=100, unit_interval=False)
    with pytest.raises(UserError, match=r"model=vae has a Bernoulli likelihood .* model.likelihood=gaussian"):
        VAE(VAE.Config(z_dim=2, hidden=[16]), spec)
    torch.manual_seed(0)
    model = VAE(VAE.Config(z_dim=2, hidden=[16], iw_samples=8, likelihood="gaussian"), spec)
    assert isinstance(model.head, Gaussian) and model.decoder[-1].out_features == 2 * 6
    x = torch.randn(32, 6) * 3
    from dgm_run.data.base import Batch

    terms = model.loss("elbo", Batch(x=x))
    assert torch.allclose(terms["loss"], terms["recon"] + terms["kl_z"]) and torch.isfinite(terms["loss"])
    metrics = model.evaluate(x, torch.zeros(32, dtype=torch.long))
    assert metrics["log_likelihood"].shape == (32,) and torch.isfinite(metrics["log_likelihood"]).all()
    # Samples and reconstructions are the decoder's means, unbounded.
    mean = model.decoder(model.encode(x)[0])[:, :6]
    assert torch.equal(model.reconstruct(x), mean.detach())
    assert model.sample(5).shape == (5, 6)
