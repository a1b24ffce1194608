"""CVAE for image completion: a conditional VAE given the visible part of an image (Sohn et al.
2015; Doersch 2016, "Tutorial on variational autoencoders", section 4 and figure 8a).

The image x is split by a fixed mask into a visible part c (the condition) and a hidden part h:

    q(z | h, c) from the whole image,   p(z) = N(0, I),   p(h | z, c) from the code and c only,

trained on -log p(h|z,c) + KL(q(z|h,c) || p(z)) (`model.likelihood_on=all`: the decoder's pixels
of the visible part are scored too, so the decoder also reconstructs c). At test time fresh
codes z ~ p(z) with the visible part give different completions (the `completions` grid).
`eval/log_likelihood` is the importance-weighted estimate of log p(h | c), the hidden part only;
`model.conditional=false` hides c from the decoder too: a VAE of the hidden pixels, log p(h),
the baseline to set beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from dgm_run.checks import check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec, Grid
from dgm_run.errors import UserError
from dgm_run.models.nn import (
    ACTIVATIONS,
    kl_standard_normal,
    mlp,
    normal_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from dgm_run.models.vae.family import VAEFamily, VAEFamilyConfig
from dgm_run.models.vae.importance import iw_log_likelihood

# Named visible parts, as functions of the image side (H, W) -> bool mask (H, W), True where visible.
MASKS = {
    "left_half": lambda h, w: torch.arange(w).expand(h, w) < w // 2,
    "top_half": lambda h, w: torch.arange(h).unsqueeze(1).expand(h, w) < h // 2,
    "center_column": lambda h, w: (torch.arange(w) - (w - 1) / 2).abs().expand(h, w) < 1,
}
# Grey level that marks hidden pixels in the completions grid.
HIDDEN_GREY = 0.5


def visible_mask(condition: str, spec: DataSpec) -> Tensor:
    """The visible pixels as a flat bool mask over the data's dimensions (channels share the image mask)."""
    c, h, w = spec.shape if len(spec.shape) == 3 else (1, *spec.shape[-2:])
    if condition in MASKS:
        mask = MASKS[condition](h, w)
    else:
        path = Path(condition)
        try:
            with Image.open(path) as image:
                mask = torch.tensor(list(image.convert("L").getdata())).view(image.height, image.width) > 127
        except (OSError, ValueError) as err:
            raise UserError(
                f"model.condition={condition}: not one of {', '.join(MASKS)} nor a readable mask image ({err})"
            ) from None
        if mask.shape != (h, w):
            raise UserError(f"model.condition={condition}: the mask is {tuple(mask.shape)}, the images {(h, w)}")
    if mask.all() or not mask.any():
        raise UserError(f"model.condition={condition}: the mask must leave some pixels visible and some hidden")
    return mask.expand(c, h, w).flatten()


class CVAE(VAEFamily):
    @dataclass
    class Config(VAEFamilyConfig):
        _target_: str = "dgm_run.models.vae.cvae.CVAE"
        # The visible part: left_half, top_half, center_column, or a mask image (white: visible).
        condition: str = "left_half"
        # false: the decoder does not see the visible part (a VAE of the hidden pixels, the baseline).
        conditional: bool = True
        # The training likelihood on the hidden pixels, or on all of them.
        likelihood_on: str = "hidden"
        z_dim: int = 20
        hidden: list[int] = field(default_factory=lambda: [500, 500])
        activation: str = "relu"
        iw_samples: int = 100
        # Completions per test image in the `completions` grid, and test images in it.
        completions: int = 6
        completion_rows: int = 8

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "z_dim", "iw_samples", "completions", "completion_rows")
            check_sizes(self, "hidden")
            check_choice(self, "activation", tuple(ACTIVATIONS))
            check_choice(self, "likelihood_on", ("hidden", "all"))

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.register_buffer("visible", visible_mask(cfg.condition, spec))
        # The same parts as pixel indices, for the training step: a bool-mask index waits for the GPU
        # (it counts the pixels first), an index_select does not. Derived from the mask, so not saved.
        scored = ~self.visible if cfg.likelihood_on == "hidden" else torch.ones_like(self.visible)
        for name, mask in (("visible_idx", self.visible), ("hidden_idx", ~self.visible), ("scored_idx", scored)):
            self.register_buffer(name, mask.nonzero().squeeze(1), persistent=False)
        n_visible = len(self.visible_idx)
        self.encoder = mlp(self.x_dim, cfg.hidden, 2 * cfg.z_dim, cfg.activation)
        # The decoder outputs every pixel; the hidden ones are the model of h.
        self.decoder = mlp(
            cfg.z_dim + n_visible, cfg.hidden[::-1], self.x_dim * self.head.outputs_per_dim, cfg.activation
        )

    def condition(self, x: Tensor) -> Tensor:
        """The decoder's view of flat images x: their visible pixels (zeros when not conditional)."""
        c = x.index_select(1, self.visible_idx)
        return c if self.cfg.conditional else torch.zeros_like(c)

    def decode_logits(self, z: Tensor, c: Tensor) -> Tensor:
        """The decoder's output for codes z (..., B, Z) and conditions c (B, V)."""
        return self.decoder(torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], -1))

    def log_p(self, out: Tensor, x: Tensor, pixels: Tensor) -> Tensor:
        """log p(x's `pixels` (indices) | z, c) from the decoder's output, summed over those pixels: each of
        the head's outputs per pixel (logits; or mean and log-variance) cut to them."""
        parts = out.chunk(self.head.outputs_per_dim, dim=-1)
        return self.head.log_prob(
            torch.cat([p.index_select(-1, pixels) for p in parts], -1), x.index_select(-1, pixels)
        )

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        x = batch.x.flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        out = self.decode_logits(reparameterize(mu, logvar), self.condition(x))
        return self.elbo_terms(batch, -self.log_p(out, x, self.scored_idx), kl_standard_normal(mu, logvar))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per image: the one-draw ELBO of the hidden part and its importance-weighted log-likelihood."""
        x = x.flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        c, hidden = self.condition(x), self.hidden_idx
        elbo = self.log_p(self.decode_logits(reparameterize(mu, logvar), c), x, hidden) - kl_standard_normal(mu, logvar)

        def log_weights(n: int) -> Tensor:
            z = reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape))  # (n, B, Z)
            return (
                self.log_p(self.decode_logits(z, c), x, hidden)
                + standard_normal_log_prob(z)
                - normal_log_prob(z, mu, logvar)
            )

        return {"elbo": elbo, "log_likelihood": iw_log_likelihood(log_weights, self.cfg.iw_samples, len(x), x.device)}

    def complete(self, x: Tensor, z: Tensor) -> Tensor:
        """Images x (B, ...) with their hidden part replaced by the decoder's mean for codes z (B, Z)."""
        flat = x.flatten(1).float()
        mean = self.head.mean(self.decode_logits(z, self.condition(flat)))
        return torch.where(self.visible, flat, mean).view_as(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.complete(x, self.encoder(x.flatten(1)).chunk(2, dim=-1)[0])

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1)).chunk(2, dim=-1)[0]

    @torch.no_grad()
    def images(self, x: Tensor, y: Tensor) -> dict[str, Grid]:
        """One row per test image: its visible part (hidden pixels grey), completions from fresh codes
        z ~ p(z), then the true image."""
        x = x[: self.cfg.completion_rows].float()
        k = self.cfg.completions
        shown = torch.where(self.visible, x.flatten(1), torch.full_like(x.flatten(1), HIDDEN_GREY)).view_as(x)
        z = torch.randn(len(x) * k, self.cfg.z_dim, device=x.device)
        completions = self.complete(x.repeat_interleave(k, 0), z).view(len(x), k, *x.shape[1:])
        rows = torch.cat([shown.unsqueeze(1), completions, x.unsqueeze(1)], 1)
        return {"completions": Grid(rows.flatten(0, 1), nrow=k + 2)}
