"""M2: the exact sum over y equals a per-label loop over the concatenated networks; it learns to classify."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import pytest

from dgm_run.data.base import DataSpec
from dgm_run.errors import UserError
from dgm_run.models.m2 import M2
from dgm_run.models.nn import bernoulli_log_prob, kl_standard_normal
from dgm_run.train import run
from tests.conftest import compose_cfg

SPEC = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)


def brute_force_neg_elbo(model: M2, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-L(x, y) for each label by a loop, with first layers on the concatenation [input, onehot(y)]."""
    k = model.spec.n_classes
    enc_w = torch.cat([model.encoder_in.u.weight, model.encoder_in.y.weight], 1)
    dec_w = torch.cat([model.decoder_in.u.weight, model.decoder_in.y.weight], 1)
    columns = []
    for label in range(k):
        onehot = F.one_hot(torch.full((len(x),), label), k).float()
        mu, logvar = model.encoder(F.linear(torch.cat([x, onehot], 1), enc_w, model.encoder_in.u.bias)).chunk(2, -1)
        z = mu + torch.exp(0.5 * logvar) * eps[:, label]
        logits = model.decoder(F.linear(torch.cat([z, onehot], 1), dec_w, model.decoder_in.u.bias))
        columns.append(-bernoulli_log_prob(logits, x) + kl_standard_normal(mu, logvar) + torch.log(torch.tensor(k)))
    return torch.stack(columns, 1)


def test_exact_sum_over_labels_matches_a_per_label_loop():
    torch.manual_seed(0)
    model = M2(M2.Config(z_dim=2, hidden=[8, 6]), SPEC)
    x = torch.bernoulli(torch.full((5, 16), 0.4))
    eps = torch.randn(5, 3, 2)
    fast = model.all_labels_neg_elbo(x, eps)
    assert fast.shape == (5, 3)
    torch.testing.assert_close(fast, brute_force_neg_elbo(model, x, eps), rtol=1e-5, atol=1e-5)
    # The labelled path agrees with the column of each example's label.
    y = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(model.labelled_neg_elbo(x, y, eps[torch.arange(5), y]), fast[torch.arange(5), y])


def test_m2_learns_to_classify_from_few_labels(tmp_path):
    cfg = compose_cfg("model=m2", "model.hidden=[64]", "model.z_dim=4", "trainer.max_epochs=30",
                      "trainer.batch_size=50", "trainer.labelled_batch_size=20", "trainer.eval_every_epochs=30",
                      "trainer.progress_bar=false", "logger.images=0", "device=cpu")
    cfg.data = OmegaConf.create({"_target_": "tests.toy_models.Prototypes", "n_labels": 20, "split_seed": 0,
                                 "binarize": True})
    metrics = run(cfg, tmp_path)
    assert metrics["eval/accuracy"] > 0.9  # chance is 0.25; 5 labels per class
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("train/elbo/loss")]
    assert losses[-1] < 0.8 * losses[0]
    assert {"train/elbo/cls", "train/elbo/unlabelled", "train/elbo/entropy"} <= set(events.Tags()["scalars"])


def test_m2_needs_labels():
    with pytest.raises(UserError, match="model=m2 needs labelled data: use data=mnist_100labels"):
        M2(M2.Config(), DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90))
