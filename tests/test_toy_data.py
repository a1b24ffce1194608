"""In-process toy data (one-hot points, Gaussian mixtures, spirals) and folders of images."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from dgm_run.data.image_folder import ImageFolderData
from dgm_run.data.toy import GMM2D, OneHot4, Spiral2D
from dgm_run.errors import UserError


def test_onehot4_cycles_through_the_four_points():
    splits = OneHot4(OneHot4.Config(n_train=12)).load()
    assert torch.equal(splits.x_train[:4], torch.eye(4)) and torch.equal(splits.x_train[4:8], torch.eye(4))
    assert splits.y_train.tolist() == [0, 1, 2, 3] * 3 and torch.equal(splits.x_test, torch.eye(4))


@pytest.mark.parametrize("layout,n_modes,scale", [("circle", 8, 2.0), ("grid", 25, 1.5)])
def test_gmm_points_sit_on_their_modes(layout, n_modes, scale):
    cfg = GMM2D.Config(n_modes=n_modes, layout=layout, scale=scale, std=0.05, n_train=20_000, n_test=100)
    splits = GMM2D(cfg).load()
    assert splits.modes.shape == (n_modes, 2) and splits.mode_std == 0.05
    offsets = splits.x_train - splits.modes[splits.y_train]
    assert offsets.std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.bincount(splits.y_train, minlength=n_modes).min() > 0.8 * 20_000 / n_modes
    if layout == "circle":
        assert splits.modes.norm(dim=1).tolist() == pytest.approx([scale] * n_modes)
    else:  # a 5 x 5 grid centred on the origin
        assert sorted(set(splits.modes[:, 0].tolist())) == pytest.approx([-3.0, -1.5, 0.0, 1.5, 3.0])


def test_toy_data_depend_only_on_their_own_seed():
    def draw(seed):
        torch.manual_seed(123 + seed)  # the run's seed: must not matter
        return GMM2D(GMM2D.Config(n_train=50, n_test=10, seed=seed)).load().x_train

    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


def test_spiral_arms_wind_outwards():
    splits = Spiral2D(Spiral2D.Config(arms=2, turns=1.0, scale=2.0, noise=0.0, n_train=4000, n_test=10)).load()
    radius = splits.x_train.norm(dim=1)
    assert radius.max() <= 2.0 + 1e-5 and set(splits.y_train.tolist()) == {0, 1}
    # Without noise, a point's angle follows from its radius and arm: angle = 2 pi (turns r / scale + arm / arms).
    angle = torch.atan2(splits.x_train[:, 1], splits.x_train[:, 0])
    expected = 2 * math.pi * (radius / 2.0 + splits.y_train / 2)
    assert torch.allclose(
        torch.polar(torch.ones_like(angle), angle), torch.polar(torch.ones_like(angle), expected), atol=1e-3
    )


def write_images(folder, n, size=(40, 30), color=(200, 10, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, color).save(folder / f"{i:03d}.png")


def test_image_folder_with_class_subfolders(tmp_path):
    write_images(tmp_path / "cats", 10, color=(255, 0, 0))
    write_images(tmp_path / "dogs", 10, color=(0, 0, 255))
    splits = ImageFolderData(ImageFolderData.Config(root=str(tmp_path), size=16, test_every=5)).load()
    assert splits.x_train.shape == (16, 3, 16, 16) and splits.x_train.dtype == torch.uint8
    assert splits.x_test.shape == (4, 3, 16, 16) and splits.n_classes == 2
    red = splits.x_train[splits.y_train == 0]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()


def test_image_folder_of_plain_images_in_grey(tmp_path):
    write_images(tmp_path, 6)
    splits = ImageFolderData(ImageFolderData.Config(root=str(tmp_path), size=8, grayscale=True, test_every=3)).load()
    assert splits.x_train.shape == (4, 1, 8, 8) and splits.n_classes == 1


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        ImageFolderData(ImageFolderData.Config(root=str(tmp_path / "none"))).load()
    with pytest.raises(UserError, match="no images found"):
        ImageFolderData(ImageFolderData.Config(root=str(tmp_path))).load()
    write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=f"image {tmp_path / 'broken.png'} is corrupt or truncated"):
        ImageFolderData(ImageFolderData.Config(root=str(tmp_path))).load()
