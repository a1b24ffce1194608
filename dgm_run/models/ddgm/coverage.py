"""How well a generator's samples cover 2-D data: mode metrics on mixtures with known modes and
closeness metrics on data without them (spirals). Used by DDGM; any 2-D generator may use them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def mode_metrics(samples: Tensor, modes: Tensor, mode_std: float, min_samples: int) -> dict[str, Any]:
    """As in the unrolled-GAN and VEEGAN papers: a sample is of high quality when it lies within
    3 std of its nearest mode; a mode is covered when at least `min_samples` high-quality
    samples are nearest to it (PacGAN's rule: 20 of 2,500 for 8 or 25 modes)."""
    modes = modes.to(samples)
    distance, nearest = torch.cdist(samples, modes).min(dim=1)
    good = distance <= 3 * mode_std
    counts = torch.bincount(nearest[good], minlength=len(modes))
    return {"modes_covered": (counts >= min_samples).sum(), "high_quality": good.float().mean()}


def closeness_metrics(x: Tensor, samples: Tensor) -> dict[str, Any]:
    """Data without known modes (spirals). The test set is split in halves A and B, and the radius
    r is the 99th percentile of the distance from a point of A to its nearest point of B: how close
    fresh data lies to data. `near_data` is the share of |A| samples within r of their nearest B
    point, `data_covered` the share of B points within r' of their nearest sample (r' likewise,
    from B to A). Samples from the data distribution itself score about 0.99 on both."""
    half = len(samples)  # |A| = |B| = number of samples, so that the radii fit the sample count
    a, b = x[:half], x[half : 2 * half]
    r_ab = torch.quantile(torch.cdist(a, b).min(dim=1).values, 0.99)
    r_ba = torch.quantile(torch.cdist(b, a).min(dim=1).values, 0.99)
    to_b = torch.cdist(samples, b)  # (half, half)
    return {
        "near_data": (to_b.min(dim=1).values <= r_ab).float().mean(),
        "data_covered": (to_b.min(dim=0).values <= r_ba).float().mean(),
    }
