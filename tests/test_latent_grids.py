"""The latent-space grids: the manifold of a 2-D code (one per label for the class-conditional models) and
the interpolations between test digits of different labels; built by the models and logged by a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions import Normal

from dgm_run.contract import DataSpec
from dgm_run.models.avb.avb import AVB
from dgm_run.models.semi_supervised.adgm import ADGM
from dgm_run.models.semi_supervised.m1m2 import M1M2
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.sdgm import SDGM
from dgm_run.models.vae.beta_vae import BetaVAE
from dgm_run.models.vae.latent_grids import interpolation_pairs, quantile_plane
from dgm_run.models.vae.vae import VAE
from tests.conftest import TINY

SPEC = DataSpec(shape=(1, 4, 4), n_classes=10, is_image=True, n_train=100)
LABELLED = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)
# Test labels out of order and repeated: the first digit of label 0 is at 2, of 1 at 0, of 2 at 3.
Y3 = torch.tensor([1, 1, 0, 2, 2, 0, 1, 2])
# The normal's quantiles at 20 (or 10) probabilities evenly spaced in [0.05, 0.95].
QUANTILES = {side: Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side)) for side in (10, 20)}


def digits(n: int, seed: int = 3) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(seed))


def ten_labels(n: int) -> torch.Tensor:
    """Every label 0-9, in a shuffled order, repeated to n test digits."""
    return torch.randperm(10, generator=torch.Generator().manual_seed(0)).repeat(n // 10 + 1)[:n]


def recording(monkeypatch, model, method: str) -> list[tuple]:
    """The arguments of every call of model.<method>, which still runs."""
    calls: list[tuple] = []
    original = getattr(model, method)
    monkeypatch.setattr(model, method, lambda *args: calls.append(args) or original(*args))
    return calls


def assert_quantile_plane(z: torch.Tensor, side: int) -> None:
    """Codes (side * side, 2) in rows along z[0] and columns along z[1] at the normal's quantiles."""
    z = z.view(side, side, 2)
    q = QUANTILES[side]
    torch.testing.assert_close(z[..., 0], q.unsqueeze(1).expand(side, side))
    torch.testing.assert_close(z[..., 1], q.expand(side, side))


# ------------------------------------------------------------------ the arithmetic
def test_quantile_plane_spans_the_normal_quantiles_row_major():
    assert_quantile_plane(quantile_plane(20, torch.device("cpu")), 20)
    torch.testing.assert_close(QUANTILES[20][[0, -1]], torch.tensor([-1.6449, 1.6449]), atol=1e-4, rtol=0)


def test_pairs_join_the_first_digit_of_each_label_to_that_of_the_next_label():
    assert interpolation_pairs(Y3).tolist() == [[2, 0], [0, 3], [3, 2]]  # labels 0-1, 1-2, 2-0
    assert interpolation_pairs(Y3, rows=2).tolist() == [[2, 0], [0, 3]]
    y = ten_labels(50)
    pairs = interpolation_pairs(y)
    assert pairs.shape == (8, 2) and (y[pairs[:, 0]] != y[pairs[:, 1]]).all()
    assert y[pairs[:, 0]].tolist() == list(range(8)) and y[pairs[:, 1]].tolist() == list(range(1, 9))
    assert interpolation_pairs(torch.zeros(5, dtype=torch.long)).shape == (0, 2)  # one label: no pair


# ------------------------------------------------------------------ models with one code z
@pytest.mark.parametrize("model_class", [VAE, BetaVAE, AVB])
def test_latent_decoders_give_a_20x20_manifold_for_a_2d_code_and_interpolations(model_class):
    torch.manual_seed(0)
    model = model_class(model_class.Config(z_dim=2, hidden=[16]), SPEC)
    grids = model.images(digits(50), ten_labels(50))
    assert set(grids) == {"manifold", "interpolations"} | ({"traversal"} if model_class is BetaVAE else set())
    assert grids["manifold"].nrow == 20 and grids["manifold"].images.shape == (400, 1, 4, 4)
    assert grids["interpolations"].nrow == 12 and grids["interpolations"].images.shape == (8 * 12, 1, 4, 4)


def test_no_manifold_unless_the_code_is_2d():
    model = VAE(VAE.Config(z_dim=3, hidden=[16]), SPEC)
    assert set(model.images(digits(50), ten_labels(50))) == {"interpolations"}
    # One label in the test set: no pair of different labels, no interpolations.
    assert model.images(digits(50), torch.zeros(50, dtype=torch.long)) == {}


def test_the_vae_manifold_decodes_the_normal_quantiles(monkeypatch):
    model = VAE(VAE.Config(z_dim=2, hidden=[16]), SPEC)
    calls = recording(monkeypatch, model, "decode")
    model.images(digits(50), ten_labels(50))
    (z,) = [z for (z,) in calls if len(z) == 400]
    assert_quantile_plane(z, 20)


def test_interpolation_rows_go_straight_from_one_test_digit_to_another_of_a_different_label(monkeypatch):
    torch.manual_seed(0)
    model = VAE(VAE.Config(z_dim=3, hidden=[16]), SPEC)
    x, y = digits(50), ten_labels(50)
    calls = recording(monkeypatch, model, "decode")
    rows = model.images(x, y)["interpolations"].images.view(8, 12, 1, 4, 4)
    pairs = interpolation_pairs(y)
    torch.testing.assert_close(rows[:, 0], x[pairs[:, 0]])
    torch.testing.assert_close(rows[:, -1], x[pairs[:, 1]])
    # The decoded ends are the digits' reconstructions from the mean of q(z|x).
    torch.testing.assert_close(rows[:, 1], model.decode(model.code(x[pairs[:, 0]])))
    torch.testing.assert_close(rows[:, -2], model.decode(model.code(x[pairs[:, 1]])))
    # In between, ten evenly spaced codes: equal steps along each row.
    (z,) = [z for (z,) in calls if len(z) == 80]
    steps = z.view(8, 10, 3).diff(dim=1)
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))


def test_beta_vae_adds_its_traversal_to_the_vae_grids():
    model = BetaVAE(BetaVAE.Config(z_dim=2, hidden=[16]), SPEC)
    grids = model.images(digits(50), ten_labels(50))
    assert grids["traversal"].images.shape == (2 * 9, 1, 4, 4)  # one row per dimension of the 2-D code
    assert grids["manifold"].images.shape == (400, 1, 4, 4)


# ------------------------------------------------------------------ class-conditional models
@pytest.mark.parametrize(
    "model_class,fields",
    [
        (M2, {}),
        (ADGM, {"a_dim": 3}),
        (SDGM, {"a_dim": 3}),
        (M1M2, {"m1_hidden": [8], "m1_z_dim": 3}),
    ],
    ids=["m2", "adgm", "sdgm", "m1m2"],
)
def test_class_conditional_models_give_a_10x10_manifold_per_label(model_class, fields):
    torch.manual_seed(0)
    model = model_class(model_class.Config(z_dim=2, hidden=[8], **fields), LABELLED)
    grids = model.images(digits(8), Y3)
    assert set(grids) == {"analogies", "manifold/0", "manifold/1", "manifold/2", "interpolations"}
    for label in range(3):
        assert grids[f"manifold/{label}"].nrow == 10 and grids[f"manifold/{label}"].images.shape == (100, 1, 4, 4)
    assert grids["interpolations"].nrow == 12 and grids["interpolations"].images.shape == (3 * 12, 1, 4, 4)
    wide = model_class(model_class.Config(z_dim=3, hidden=[8], **fields), LABELLED)
    assert set(wide.images(digits(8), Y3)) == {"analogies", "interpolations"}


def test_m2_manifolds_fix_the_label_and_interpolations_decode_with_the_left_label(monkeypatch):
    torch.manual_seed(0)
    model = M2(M2.Config(z_dim=2, hidden=[8]), LABELLED)
    x = digits(8)
    calls = recording(monkeypatch, model, "decode_style")
    rows = model.images(x, Y3)["interpolations"].images.view(3, 12, 1, 4, 4)
    ((z, labels),) = [call for call in calls if len(call[0]) == 300]
    for label in range(3):
        assert_quantile_plane(z[label * 100 : (label + 1) * 100], 10)
        assert (labels[label * 100 : (label + 1) * 100] == label).all()
    ((_, labels),) = [call for call in calls if len(call[0]) == 30]
    assert labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10  # the left digits' labels
    # The ends: each digit's style, both decoded with the left digit's label 0 in the first row.
    left, right = x[[2]], x[[0]]
    torch.testing.assert_close(rows[0, 1], model.decode_style(model.latent(left), torch.tensor([0])).view(1, 4, 4))
    torch.testing.assert_close(rows[0, -2], model.decode_style(model.latent(right), torch.tensor([0])).view(1, 4, 4))


# ------------------------------------------------------------------ a real run
def test_a_run_with_a_2d_code_logs_both_grids(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in TINY if not o.startswith("model.z_dim=")]
    code, _, err = cli("model=vae", "model.z_dim=2", *overrides)
    assert code == 0, err
    (run_dir,) = list(Path("outputs").glob("*/*"))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"manifold", "interpolations"} <= set(events.Tags()["images"])
    manifold, interpolations = events.Images("manifold")[-1], events.Images("interpolations")[-1]
    # 28 x 28 digits, make_grid's padding 2 around each: 20 x 20 codes; 8 pairs of the 10 labels, 12 columns.
    assert (manifold.width, manifold.height) == (20 * 28 + 21 * 2, 20 * 28 + 21 * 2)
    assert (interpolations.width, interpolations.height) == (12 * 28 + 13 * 2, 8 * 28 + 9 * 2)
