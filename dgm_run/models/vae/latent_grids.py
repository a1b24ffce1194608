"""The arithmetic of two pictures of a latent space, shared by the VAE family's models.

- The manifold (Kingma & Welling 2014, figure 4): a 2-D code decoded over a grid of the standard
  normal's quantiles, z = (Φ⁻¹(p_i), Φ⁻¹(p_j)) for `side` probabilities p evenly spaced in
  [0.05, 0.95]: equal steps in probability, so each cell covers as much prior mass as the next.
- Interpolations: rows of decoded codes on the straight line between the codes of two test digits
  of different labels, each row between the two digits themselves.

Pure functions of tensors and callables: the models say what a code and a decoding are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Normal

from dgm_run.contract import Grid

# Cells per side of the manifold, and of each label's manifold for the class-conditional models
# (Kingma et al. 2014, figure 1a).
MANIFOLD_SIDE = 20
LABEL_MANIFOLD_SIDE = 10
# The probabilities whose normal quantiles span the manifold: the outer 5% each side decode
# codes the prior hardly ever draws.
PROBABILITY_RANGE = (0.05, 0.95)
# Interpolation rows (test digit pairs) at most, and decoded points per row, both ends included.
INTERPOLATION_ROWS = 8
INTERPOLATION_STEPS = 10


def quantile_plane(side: int, device: torch.device) -> Tensor:
    """(side * side, 2) codes at the standard normal's quantiles, row-major: the i-th run of `side`
    codes has z[0] at the i-th quantile, and z[1] goes through all of them along the run."""
    q = Normal(0.0, 1.0).icdf(torch.linspace(*PROBABILITY_RANGE, side, device=device))
    return torch.cartesian_prod(q, q)


def interpolation_pairs(y: Tensor, rows: int = INTERPOLATION_ROWS) -> Tensor:
    """(R, 2) indices into the labels y of test digits with different labels: the first digit of each
    label present, in label order, paired with the first digit of the next label present (the last
    with the first), the first `rows` such pairs. R = min(rows, labels present); none for fewer than
    two labels."""
    labels, which = torch.unique(y, return_inverse=True)
    if len(labels) < 2:
        return torch.empty(0, 2, dtype=torch.long, device=y.device)
    first = torch.full_like(labels, len(y)).scatter_reduce(0, which, torch.arange(len(y), device=y.device), "amin")
    return torch.stack([first, first.roll(-1)], 1)[:rows]


def straight_lines(left: Tensor, right: Tensor, steps: int = INTERPOLATION_STEPS) -> Tensor:
    """(R, steps, Z): `steps` codes evenly spaced from each row of left (R, Z) to that of right, both
    included exactly (torch.lerp is exact at both ends)."""
    t = torch.linspace(0.0, 1.0, steps, device=left.device, dtype=left.dtype).view(1, steps, 1)
    return torch.lerp(left.unsqueeze(1), right.unsqueeze(1), t)


def interpolations(
    x: Tensor, y: Tensor, code: Callable[[Tensor], Tensor], decode: Callable[[Tensor, Tensor], Tensor]
) -> dict[str, Grid]:
    """{"interpolations": rows [left test digit, decodings of the straight line from its code to the
    right one's, right test digit]} for the pairs of `interpolation_pairs`; {} without such a pair.
    code(flat images (B, D)) -> codes (B, Z); decode(codes (N, Z), labels (N,)) -> images of N codes, all
    of a row decoded with its left digit's label (models without labels ignore them)."""
    pairs = interpolation_pairs(y)
    if len(pairs) == 0:
        return {}
    ends = x[pairs.flatten()].float()  # left, right, left, right, ...
    z = code(ends.flatten(1)).view(len(pairs), 2, -1)
    lines = straight_lines(z[:, 0], z[:, 1])
    labels = y[pairs[:, 0]].repeat_interleave(lines.shape[1])
    decoded = decode(lines.flatten(0, 1), labels).view(*lines.shape[:2], *x.shape[1:])
    ends = ends.view(len(pairs), 2, *x.shape[1:])
    rows = torch.cat([ends[:, :1], decoded, ends[:, 1:]], 1)
    return {"interpolations": Grid(rows.flatten(0, 1), nrow=rows.shape[1])}
