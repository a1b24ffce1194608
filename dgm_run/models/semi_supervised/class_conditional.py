"""What the class-conditional models (M2, ADGM, SDGM, M1+M2) show beyond their metrics: per-class accuracy,
a sample grid one column per label, the analogies, per-label manifolds and interpolations grids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dgm_run.contract import DataSpec, Grid
from dgm_run.models.vae.latent_grids import LABEL_MANIFOLD_SIDE, interpolations, quantile_plane


class ClassConditional:
    """Mixin of the class-conditional models (M2, ADGM, SDGM, M1+M2), before GenerativeModel in the bases:
    per-class accuracy, a sample grid one column per label, the analogies, manifold and interpolations grids.
    `latent(x)` is a test image's style (its code at the predicted label); `decode_style(z, y)` decodes codes."""

    per_class_metrics = ("accuracy",)
    needs_labels = True
    spec: DataSpec
    cfg: Any

    def latent(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_style(self, z: Tensor, y: Tensor) -> Tensor:
        """Images (B, ...) of codes z (B, Z) with labels y (B,)."""
        raise NotImplementedError

    @property
    def grid_columns(self) -> int:
        return self.spec.n_classes  # class-conditional samples: one column per label

    @torch.no_grad()
    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """`analogies`; `manifold/<label>` for a 2-D style (`manifolds`); `interpolations`: each row the
        style moving in a straight line from its left test digit's to its right one's (of another label),
        every point decoded with the left digit's label (latent_grids.py)."""
        k = self.spec.n_classes
        return {
            "analogies": Grid(self.analogies(x[:k]), nrow=k + 1),
            **self.manifolds(x.device),
            **interpolations(x, y, self.latent, self.decode_style),
        }

    def manifolds(self, device: torch.device) -> dict[str, Grid]:
        """Kingma et al. 2014, figure 1a: per label, the decodings of a LABEL_MANIFOLD_SIDE-square grid of
        the prior's quantiles with that label, rows along z[0], columns along z[1]; none unless z is 2-D."""
        if self.cfg.z_dim != 2:
            return {}
        z = quantile_plane(LABEL_MANIFOLD_SIDE, device)
        k = self.spec.n_classes
        labels = torch.arange(k, device=device).repeat_interleave(len(z))
        images = self.decode_style(z.repeat(k, 1), labels).view(k, len(z), *self.spec.shape)
        return {f"manifold/{label}": Grid(images[label], nrow=LABEL_MANIFOLD_SIDE) for label in range(k)}

    def analogies(self, x: Tensor) -> Tensor:
        """Per test digit: the digit, then its style decoded with each label. (B * (K + 1), C, H, W)."""
        z = self.latent(x)
        k = self.spec.n_classes
        y = torch.arange(k, device=x.device).repeat(len(x))
        generated = self.decode_style(z.repeat_interleave(k, 0), y).view(len(x), k, *x.shape[1:])
        return torch.cat([x.float().unsqueeze(1), generated], 1).flatten(0, 1)
