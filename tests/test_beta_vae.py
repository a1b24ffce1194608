"""β-VAE: β = 1 is the VAE, β weights the KL term, and the latent traversal grid (built and logged)."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.contract import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.vae import beta_vae as beta_vae_module
from dgm_run.models.vae.beta_vae import BetaVAE
from dgm_run.models.vae.vae import VAE
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg

SPEC = DataSpec(shape=(1, 4, 4), n_classes=10, is_image=True, n_train=100)
SMALL = {"z_dim": 3, "hidden": [16]}


def loss_and_gradients(model_class, **fields):
    torch.manual_seed(0)
    model = model_class(model_class.Config(**SMALL, **fields), SPEC)
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    terms = model.loss("elbo", Batch(x=x))
    terms["loss"].backward()
    return model, terms, {name: p.grad for name, p in model.named_parameters()}


def test_beta_one_gives_the_vae_loss_exactly():
    vae, vae_terms, vae_grads = loss_and_gradients(VAE)
    beta_vae, terms, grads = loss_and_gradients(BetaVAE, beta=1.0)
    assert all(torch.equal(p, q) for p, q in zip(vae.state_dict().values(), beta_vae.state_dict().values()))
    assert list(terms) == list(vae_terms) == ["loss", "recon", "kl_z"]
    for term in terms:
        assert torch.equal(terms[term], vae_terms[term]), term
    for name in grads:
        assert torch.equal(grads[name], vae_grads[name]), name


def test_beta_weights_the_kl_term_only():
    _, vae_terms, _ = loss_and_gradients(VAE)
    _, terms, _ = loss_and_gradients(BetaVAE)  # beta = 4, the default
    assert BetaVAE.Config().beta == 4.0
    assert torch.equal(terms["recon"], vae_terms["recon"]) and torch.equal(terms["kl_z"], vae_terms["kl_z"])
    torch.testing.assert_close(terms["loss"], terms["recon"] + 4 * terms["kl_z"])


def test_traversal_varies_one_dimension_per_row_most_informative_first(monkeypatch):
    monkeypatch.setattr(beta_vae_module, "TRAVERSAL_ROWS", 2)  # fewer rows than z_dim = 3
    torch.manual_seed(0)
    model = BetaVAE(BetaVAE.Config(**SMALL), SPEC)
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.4))
    codes = []
    monkeypatch.setattr(model, "decode", lambda z: codes.append(z) or torch.zeros(len(z), 1, 4, 4))
    # One label: no pair of different labels, so no interpolations, and decode's one call is the traversal's.
    grid = model.images(x, torch.zeros(len(x), dtype=torch.long))["traversal"]
    assert grid.nrow == 9 and grid.images.shape == (2 * 9, 1, 4, 4)
    (z,) = codes
    z = z.view(2, 9, 3)
    mu, logvar = model.encode(x.flatten(1))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(0)
    dims = kl.argsort(descending=True)[:2].tolist()
    for row, dim in enumerate(dims):
        torch.testing.assert_close(z[row, :, dim], torch.linspace(-3, 3, 9))
        others = [d for d in range(3) if d != dim]
        assert torch.equal(z[row][:, others], mu[0, others].expand(9, 2))


def test_short_run_logs_the_latent_traversal(tmp_path):
    metrics = run(compose_cfg("model=beta_vae", *TINY), tmp_path)  # z_dim 8, digits 28 x 28
    assert math.isfinite(metrics["eval/elbo"]) and metrics["eval/log_likelihood"] > metrics["eval/elbo"]
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"train/elbo/loss", "train/elbo/recon", "train/elbo/kl_z"} <= set(events.Tags()["scalars"])
    traversal = events.Images("traversal")[-1]
    # 8 rows (one per latent dimension) of 9 values; make_grid pads by 2.
    assert (traversal.width, traversal.height) == (9 * 28 + 10 * 2, 8 * 28 + 9 * 2)


def test_config_defaults_and_errors(tmp_path):
    from dgm_run.config import validate

    assert validate(compose_cfg("model=beta_vae")).model.beta == 4.0
    assert validate(compose_cfg("model=beta_vae", "model.beta=1")).model.beta == 1.0
    with pytest.raises(UserError, match=r"model.beta: must be >= 0 \(got -1.0\)"):
        run(compose_cfg("model=beta_vae", *TINY, "model.beta=-1"), tmp_path)
    with pytest.raises(UserError, match=r"model=beta_vae has a Bernoulli likelihood and needs data in \[0, 1\]"):
        run(compose_cfg("model=beta_vae", *TINY, "data=gmm2d"), tmp_path)
