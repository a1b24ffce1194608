"""Sample quality of models that draw MNIST-shaped digits: FID, precision and recall in the feature
space of a small digit classifier shipped with the package.

The Inception network of the usual FID needs a download and sees 299x299 colour images; a classifier
trained on MNIST itself (`scripts/train_digit_classifier.py`, weights in dgm_run/assets/) measures
digits offline, in the same space for every model. FID is torchmetrics' (the Fréchet distance between
Gaussians fitted to the two sets of features); precision and recall are those of Kynkäänniemi et al.
2019: the share of samples inside the real digits' k-nearest-neighbour balls, and of real digits inside
the samples'. The numbers compare models with each other on this feature space, not with published
Inception FIDs.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from dgm_run.errors import UserError

DIGIT_SHAPE = (1, 28, 28)
WEIGHTS = "digit_classifier.pt"
# Neighbours that set the radius of each point's ball (the paper's k).
NEIGHBOURS = 3


class DigitClassifier(nn.Module):
    """Two conv-pool blocks, a hidden layer of `num_features` units (the features) and the 10 logits."""

    num_features = 64  # read by torchmetrics' FID

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 13 x 13
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 x 5 x 5
            nn.Flatten(),
            nn.Linear(32 * 5 * 5, self.num_features),
            nn.ReLU(),
        )
        self.logits = nn.Linear(self.num_features, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of images x in [0, 1], (B, 1, 28, 28)."""
        return self.logits(self.features(x))


def load_classifier(device: torch.device) -> DigitClassifier:
    net = DigitClassifier()
    with resources.as_file(resources.files("dgm_run.assets") / WEIGHTS) as path:
        if not path.is_file():
            raise UserError(
                f"the digit classifier's weights are missing ({path}); reinstall dgm-run, or train them "
                "with scripts/train_digit_classifier.py, or set trainer.eval_fid_samples=0"
            )
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


class Features(nn.Module):
    """Feature vectors passed through as they are: FID is given features already computed, which
    precision and recall use too."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def radii(features: Tensor, k: int = NEIGHBOURS) -> Tensor:
    """Each point's distance to its k-th nearest other point of the same set."""
    return torch.cdist(features, features).kthvalue(k + 1, dim=1).values  # +1: the point itself at 0


def coverage(points: Tensor, centres: Tensor, centre_radii: Tensor) -> Tensor:
    """The share of `points` inside at least one ball (centre, radius)."""
    return (torch.cdist(points, centres) <= centre_radii).any(dim=1).float().mean()


class SampleQuality:
    """FID, precision and recall of a model's samples against a fixed set of reference digits."""

    def __init__(self, reference: Tensor, batch_size: int = 1000) -> None:
        """`reference`: held-out digits in [0, 1], (N, 1, 28, 28); the model is measured on N samples."""
        self.batch_size = batch_size
        self.net = load_classifier(reference.device)
        self.n = len(reference)
        self.fid = FrechetInceptionDistance(
            feature=Features(DigitClassifier.num_features), reset_real_features=False
        ).to(reference.device)
        self.real = self.features(reference)
        self.fid.update(self.real, real=True)
        self.real_radii = radii(self.real)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return torch.cat(
            [self.net.features(images[i : i + self.batch_size].float()) for i in range(0, len(images), self.batch_size)]
        )

    @torch.no_grad()
    def __call__(self, samples: Tensor) -> dict[str, float]:
        fake = self.features(samples)
        self.fid.reset()  # the reference's features stay (reset_real_features=False)
        self.fid.update(fake, real=False)
        return {
            "fid": float(self.fid.compute()),
            "precision": float(coverage(fake, self.real, self.real_radii)),
            "recall": float(coverage(self.real, fake, radii(fake))),
        }
