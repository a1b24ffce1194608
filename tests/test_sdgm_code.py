"""SDGM after its authors' code (larsmaaloee/auxiliary-deep-generative-models, run_mnist.py and
models/sdgmssl.py of March 2016): batch normalisation where that code puts it, and experiment=sdgm_mnist."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_run.config import validate
from dgm_run.models.nn import RowBatchNorm
from dgm_run.models.semi_supervised.sdgm import SDGM
from tests.conftest import compose_cfg
from tests.test_fidelity_models import MNIST_SPEC, SPEC, batch


def test_batch_norm_sits_before_every_hidden_activation_of_every_network():
    """sdgmssl.py's dense_layer and the summed first layers: Linear (or the sum of the inputs' Linears),
    BatchNormLayer, then the nonlinearity; never on a head. Two hidden layers in each of q(a|x), q(y|a,x),
    q(z|a,x,y), p(a|y,z) and p(x|a,y,z): ten."""
    model = SDGM(SDGM.Config(batch_norm=True), MNIST_SPEC)
    layers = [m for m in model.modules() if not isinstance(m, (nn.Sequential, SDGM))]
    norms = [i for i, m in enumerate(layers) if isinstance(m, RowBatchNorm)]
    assert len(norms) == 10 and all(layers[i].num_features == 500 for i in norms)
    assert all(isinstance(layers[i + 1], nn.ReLU) for i in norms)
    # Each network: its first BN normalises the first layer's 500 units, its second the next hidden layer's.
    for network in (model.q_a, model.q_y, model.q_z, model.p_a, model.p_x):
        assert sum(isinstance(m, RowBatchNorm) for m in network.modules()) == 2
    assert not any(isinstance(m, RowBatchNorm) for m in SDGM(SDGM.Config(), MNIST_SPEC).modules())


def test_batch_norm_trains_on_batch_statistics_and_predicts_with_running_ones():
    torch.manual_seed(0)
    model = SDGM(SDGM.Config(a_dim=3, z_dim=2, hidden=[8, 6], batch_norm=True), SPEC)
    norm = model.q_y[0]
    assert torch.equal(norm.running_mean, torch.zeros(8))
    model.loss("elbo", batch())  # a training pass updates the running statistics
    assert not torch.equal(norm.running_mean, torch.zeros(8)) and int(norm.num_batches_tracked) == 1
    x = torch.bernoulli(torch.full((6, 16), 0.5))
    others = torch.cat([x[:1], torch.bernoulli(torch.full((5, 16), 0.5))])  # the same first digit
    model.eval()

    def first_prediction(batch_x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)  # the same draws of a for the first digit
        return model.classify(batch_x)[0]

    # Evaluation: running statistics, so a digit's prediction does not depend on the others in its batch...
    torch.testing.assert_close(first_prediction(x), first_prediction(others), rtol=0, atol=0)
    assert int(norm.num_batches_tracked) == 1  # ...and leaves the statistics alone.
    model.train()  # training mode: the batch's own statistics
    assert not torch.allclose(first_prediction(x), first_prediction(others))


@pytest.mark.parametrize("samples", [1, 3])
def test_batch_norm_matches_the_textbook_sum(samples):
    """The statistics are taken over the same rows: the labelled digits with their labels and the unlabelled
    ones with every label (q(a|x) and q(y|a,x): over the digits)."""
    from tests.test_semi_supervised import exact_sum_against_the_textbook

    torch.manual_seed(0)
    model = SDGM(
        SDGM.Config(a_dim=3, z_dim=2, hidden=[8, 6], batch_norm=True, samples=samples, mc_average="authors_sdgm"), SPEC
    )
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


def test_sdgm_experiment_is_its_codes_pipeline():
    cfg = validate(compose_cfg("experiment=sdgm_mnist"))
    model, data, optimizer = cfg.model, cfg.data, cfg.optimizer
    assert (model.batch_norm, model.samples, model.mc_average, model.init) == (True, 5, "authors_sdgm", "glorot")
    assert model.alpha is None  # beta 0.1 on sums of the data set: 0.1 N / N_l on the means
    assert (data.unlabelled_order, data.labelled_order, data.labelled_batch_size, data.n_labels) == (
        "fixed",
        "shuffle",
        100,
        100,
    )
    assert optimizer.weight_prior == pytest.approx(1 / 60_000, rel=1e-2) and optimizer.weight_decay == 0
    assert (optimizer.lr, optimizer.lr_decay, optimizer.lr_decay_every_epochs, optimizer.min_lr) == (
        3e-4,
        0.75,
        200,
        3e-5,
    )
    assert cfg.trainer.max_epochs == 1000
