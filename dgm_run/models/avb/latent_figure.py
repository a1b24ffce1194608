"""The `latent` figure of a model whose encoder draws codes (AVB): codes z ~ q(z|x) of test points coloured
by label, in the plane; codes of more than two dimensions on their first two principal components (PCA).

Non-image data (AVB's toy): FIGURE_DRAWS codes of the first test point of each label, the paper's figure 6
(how the q(z|x) of the points tile the latent space). Images: one code of each of the first FIGURE_IMAGES
test images, how the classes lie in the code space.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgm_run.contract import Scatter

FIGURE_DRAWS = 500
FIGURE_POINTS = 10
FIGURE_IMAGES = 2000


def principal_plane(z: Tensor) -> Tensor:
    """Codes z (N, Z) as points (N, 2): on their first two principal components when Z > 2."""
    z = z.float()
    if z.shape[1] < 2:  # one dimension: on a line
        return torch.cat([z, torch.zeros_like(z)], 1)
    if z.shape[1] == 2:
        return z
    centred = z - z.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # rows of vh: the principal directions
    return centred @ vh[:2].T


def latent_figure(encode: Callable[[Tensor, int], Tensor], x: Tensor, y: Tensor, is_image: bool) -> Scatter:
    """`encode(x_flat, n)` draws n codes per x, (n, B, Z)."""
    if is_image:
        n = min(len(x), FIGURE_IMAGES)
        z, labels, what = encode(x[:n].flatten(1), 1)[0], y[:n], "one per test image"
    else:
        first = torch.stack([torch.nonzero(y == c)[0, 0] for c in y.unique()[:FIGURE_POINTS]])
        draws = encode(x[first].flatten(1), FIGURE_DRAWS)  # (FIGURE_DRAWS, P, Z)
        z, labels, what = draws.flatten(0, 1), y[first].expand(FIGURE_DRAWS, -1).flatten(), "per test point"
    pca = f", PCA of {z.shape[1]} dims" if z.shape[1] > 2 else ""  # short: the title is one line of the figure
    return Scatter(principal_plane(z), labels, title=f"z ~ q(z|x) {what}{pca}")
