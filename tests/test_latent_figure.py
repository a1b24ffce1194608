"""Latent pictures for models with codes of any size: AVB's `latent` figure through PCA."""

from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.models.avb.latent_figure import principal_plane
from dgm_run.train import build, run
from tests.conftest import compose_cfg

TINY_AVB = [
    "model=avb",
    "model.z_dim=8",
    "model.hidden=[16]",
    "model.noise_dim=8",
    "model.discriminator_hidden=[16]",
    "model.discriminator_features=8",
    "model.iw_samples=2",
    "model.ac_samples=2",
    "trainer.max_steps=4",
    "logger.images=8",
    "logger.embedding=0",
    "trainer.progress_bar=false",
    "device=cpu",
]


def test_principal_plane_keeps_the_two_directions_of_largest_variance():
    torch.manual_seed(0)
    # 5-D codes spread along two oblique directions (std 5 and 2), a little noise elsewhere.
    basis = torch.linalg.qr(torch.randn(5, 5))[0]
    z = torch.randn(4000, 5) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1]) @ basis.T + 3.0
    plane = principal_plane(z)
    assert plane.shape == (4000, 2)
    assert torch.allclose(plane.mean(0), torch.zeros(2), atol=1e-3)
    assert torch.allclose(plane.std(0), torch.tensor([5.0, 2.0]), rtol=0.05)
    assert torch.equal(principal_plane(z[:, :2]), z[:, :2])  # two dimensions are shown as they are


def test_avb_on_digits_draws_its_codes_of_eight_dimensions(tmp_path):
    trainer = build(compose_cfg(*TINY_AVB, "logger=none"), tmp_path / "built")
    with torch.no_grad():
        (figure,) = trainer.model.figures(trainer.data.x_test, trainer.data.y_test).values()
    assert figure.points.shape == (2000, 2) and torch.equal(figure.labels, trainer.data.y_test[:2000])
    assert figure.title == "z ~ q(z|x) one per test image, PCA of 8 dims"

    run(compose_cfg(*TINY_AVB), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("latent")] == [4]
