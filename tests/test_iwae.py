"""IWAE: its loss is the k-draw importance-weighted bound, computed by hand from the same draws; the bound
tightens with k; `dgm-run model=iwae` trains and logs it."""

from __future__ import annotations

import math

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.contract import Batch, DataSpec
from dgm_run.models.nn import normal_log_prob, standard_normal_log_prob
from dgm_run.models.vae.iwae import IWAE
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg

SPEC = DataSpec(shape=(1, 4, 4), n_classes=10, is_image=True, n_train=100)
X = torch.bernoulli(torch.full((8, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(3))


def model(k: int) -> IWAE:
    torch.manual_seed(0)
    return IWAE(IWAE.Config(z_dim=3, hidden=[16], k=k), SPEC)


def test_the_loss_is_the_k_draw_bound():
    iwae, x = model(k=5), X.flatten(1)
    torch.manual_seed(1)
    terms = iwae.loss("elbo", Batch(x=X))
    torch.manual_seed(1)
    mu, logvar = iwae.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(5, *mu.shape)
    log_px = iwae.head.log_prob(iwae.decoder(z), x)
    log_w = log_px + standard_normal_log_prob(z) - normal_log_prob(z, mu, logvar)  # (k, B)
    torch.testing.assert_close(terms["loss"], -(torch.logsumexp(log_w, 0) - math.log(5)).mean())
    torch.testing.assert_close(terms["elbo"], log_w.mean())
    torch.testing.assert_close(terms["recon"], -log_px.mean())


def test_the_bound_tightens_with_k():
    """Averaged over many draws, the k = 20 bound lies above the k = 1 bound (the ELBO), as Jensen says."""
    bounds = {}
    for k in (1, 20):
        iwae = model(k)
        torch.manual_seed(2)
        with torch.no_grad():
            bounds[k] = -torch.stack([iwae.loss("elbo", Batch(x=X))["loss"] for _ in range(200)]).mean()
    assert float(bounds[20]) > float(bounds[1]) + 0.1, bounds


def test_dgm_run_trains_an_iwae(tmp_path):
    metrics = run(compose_cfg("model=iwae", "model.k=3", *TINY), tmp_path)
    assert math.isfinite(metrics["eval/log_likelihood"]) and math.isfinite(metrics["eval/elbo"])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("train/elbo/loss")]
    assert len(losses) >= 2 and losses[-1] < losses[0]
