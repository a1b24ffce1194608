"""DDGM: deep directed generative models with energy-based probability estimation.

Kim & Bengio 2016 (arXiv 1606.03439). An energy function, a product of experts on deep features,

    E(x) = ||x||^2 / sigma^2 - b^T x - sum_i softplus(w_i^T f(x) + c_i),   f with a tanh output,

defines p(x) ∝ exp(-E(x)). Its log-likelihood gradient needs samples of p; a generator G(z)
is trained to supply them by minimising KL(p_G || p) = E[E(G(z))] - H(p_G) + log Z. The
generator's entropy H is the paper's approximation: every batch-normalised unit a_i is taken
as Gaussian with the batch-norm scale gamma_i as its standard deviation, H ≈ sum_i ½ log(2πe gamma_i²).
The two phases alternate: `energy` (data energy down, sample energy up) and `generator`.

Because f is bounded (tanh), the experts are bounded, and the quadratic term keeps exp(-E)
normalisable whatever the parameters: the energy cannot put mass at infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec, Heatmap, Scatter
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel, ModelConfig, ScheduleEntry, frozen
from dgm_run.models.ddgm.coverage import closeness_metrics, mode_metrics
from dgm_run.models.nn import ACTIVATIONS, mlp

LOG_2PI_E = math.log(2 * math.pi * math.e)
# The conv nets halve the image side until it is at most this (28 -> 7, 32 and 64 -> 4).
MAX_BASE_SIDE = 7


def batch_norm(units: int, conv: bool) -> nn.Module:
    """Batch norm that always normalises with the batch's own statistics (no running averages):
    the entropy approximation assumes exactly that normalisation, in training and sampling alike."""
    return (nn.BatchNorm2d if conv else nn.BatchNorm1d)(units, track_running_stats=False)


class Energy(nn.Module):
    """E(x) = ||x||^2 / sigma^2 - b^T x - sum_i softplus(w_i^T f(x) + c_i); f takes images (conv) or flat x (mlp)."""

    def __init__(
        self, features: nn.Module, n_features: int, n_experts: int, x_dim: int, sigma: float, flat_input: bool
    ) -> None:
        super().__init__()
        self.features = features
        self.experts = nn.Linear(n_features, n_experts)  # rows w_i, biases c_i
        self.b = nn.Parameter(torch.zeros(x_dim))
        self.sigma = sigma
        self.flat_input = flat_input

    def forward(self, x: Tensor) -> Tensor:
        """E(x), shape (B,)."""
        flat = x.flatten(1)
        experts = F.softplus(self.experts(self.features(flat if self.flat_input else x)))
        return flat.pow(2).sum(1) / self.sigma**2 - flat @ self.b - experts.sum(1)


def conv_plan(spec: DataSpec) -> tuple[int, int]:
    """(number of stride-2 stages, side of the smallest feature map) for square images."""
    if len(spec.shape) != 3 or spec.shape[1] != spec.shape[2]:
        raise UserError(f"model.network=conv needs square images (C, H, H); the data has shape {spec.shape}")
    side, stages = spec.shape[1], 0
    while side > MAX_BASE_SIDE and side % 2 == 0:
        side, stages = side // 2, stages + 1
    if side > MAX_BASE_SIDE or stages == 0:
        raise UserError(
            f"model.network=conv needs an image side that halves down to at most {MAX_BASE_SIDE} "
            f"(e.g. 28, 32, 64); got {spec.shape[1]}"
        )
    return stages, side


class DDGM(GenerativeModel):
    @dataclass
    class Config(ModelConfig):
        _target_: str = "dgm_run.models.ddgm.ddgm.DDGM"
        schedule: list[ScheduleEntry] = field(
            default_factory=lambda: [ScheduleEntry("energy"), ScheduleEntry("generator")]
        )
        # mlp: fully connected nets (2-D toys, flattened images); conv: DCGAN-like nets for square images.
        network: str = "mlp"
        z_dim: int = 100
        # MLP hidden layers of the generator (each Linear -> batch norm -> activation) and of the feature net f.
        generator_hidden: list[int] = field(default_factory=lambda: [512, 512])
        energy_hidden: list[int] = field(default_factory=lambda: [512, 512])
        generator_activation: str = "relu"
        energy_activation: str = "leaky_relu"
        # conv: channels of the finest feature map; they double at each coarser stage (DCGAN's ngf/ndf).
        channels: int = 64
        # Size of f(x) and number of experts softplus(w_i^T f(x) + c_i).
        features: int = 256
        experts: int = 256
        # The ||x||^2 / sigma^2 term: a Gaussian base that keeps exp(-E) normalisable.
        sigma: float = 1.0
        # Weight of the entropy in the generator loss (1: the paper's KL).
        entropy_weight: float = 1.0
        # The entropy counts units (every batch-normalised unit: a conv channel's scale H x W times, once per
        # position) or scales (each batch-norm scale once, as the authors' code does); the same for an MLP.
        entropy_count: str = "units"
        # Not in the paper: weight of a penalty mean((E(x) - ||x||^2/sigma^2)^2) over data and samples in
        # the energy phase, which bounds the learned part of the energy (0: off, the paper's loss).
        energy_l2: float = 0.0
        # Squash image samples into [0, 1] with a sigmoid (false: the generator's linear output, left
        # unbounded; the ||x||^2 / sigma^2 term keeps it near the data, and there is no saturation).
        sigmoid_images: bool = True
        # Evaluation: generator samples drawn for the mixture/spiral metrics and the figures.
        eval_samples: int = 2500
        # A mixture mode counts as covered when at least this many samples lie within 3 std of it.
        mode_min_samples: int = 20

        def __post_init__(self) -> None:
            super().__post_init__()
            check_choice(self, "network", ("mlp", "conv"))
            check_choice(self, "entropy_count", ("units", "scales"))
            check_positive(self, "z_dim", "channels", "features", "experts", "eval_samples", "mode_min_samples")
            for key in ("generator_hidden", "energy_hidden"):
                check(len(getattr(self, key)) > 0, key, "must be a non-empty list of positive layer sizes (got [])")
                check_sizes(self, key)
            check_choice(self, "generator_activation", tuple(ACTIVATIONS))
            check_choice(self, "energy_activation", tuple(ACTIVATIONS))
            check(self.sigma > 0, "sigma", f"must be > 0 (got {self.sigma})")
            check(self.entropy_weight >= 0, "entropy_weight", f"must be >= 0 (got {self.entropy_weight})")
            check(self.energy_l2 >= 0, "energy_l2", f"must be >= 0 (got {self.energy_l2})")

    phases = ("energy", "generator")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.x_dim = math.prod(spec.shape)
        # Units that share each batch-norm scale, per batch-norm layer of the generator in order:
        # 1 in an MLP, H x W for a conv channel; model.entropy_count says whether the entropy counts them.
        self.units_per_scale: list[int] = []
        if cfg.network == "conv":
            self.generator, features = self._conv_nets(cfg, spec)
        else:
            self.generator = self._mlp_generator(cfg)
            features = nn.Sequential(mlp(self.x_dim, cfg.energy_hidden, cfg.features, cfg.energy_activation), nn.Tanh())
        self.energy = Energy(features, cfg.features, cfg.experts, self.x_dim, cfg.sigma, cfg.network == "mlp")

    def _mlp_generator(self, cfg: Config) -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in zip([cfg.z_dim, *cfg.generator_hidden], cfg.generator_hidden):
            # No bias: batch norm's shift replaces it.
            layers += [nn.Linear(a, b, bias=False), batch_norm(b, conv=False), ACTIVATIONS[cfg.generator_activation]()]
            self.units_per_scale.append(1)
        layers.append(nn.Linear(cfg.generator_hidden[-1], self.x_dim))
        return nn.Sequential(*layers)

    def _conv_nets(self, cfg: Config, spec: DataSpec) -> tuple[nn.Sequential, nn.Sequential]:
        """DCGAN-like nets (Radford et al. 2016): the generator upsamples with stride-2 transposed
        convolutions, batch norm and ReLU; the feature net mirrors it with stride-2 convolutions and
        leaky ReLU, without batch norm so that E(x) depends on x alone, not on its batch."""
        stages, side = conv_plan(spec)
        widths = [cfg.channels * 2**i for i in range(stages)]  # finest to coarsest
        top = widths[-1] * side * side
        gen: list[nn.Module] = [
            nn.Linear(cfg.z_dim, top, bias=False),
            nn.Unflatten(1, (widths[-1], side, side)),
            batch_norm(widths[-1], conv=True),
            nn.ReLU(),
        ]
        self.units_per_scale.append(side * side)
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1]):
            gen += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), batch_norm(c_out, conv=True), nn.ReLU()]
            side *= 2
            self.units_per_scale.append(side * side)
        gen.append(nn.ConvTranspose2d(widths[0], spec.shape[0], 4, 2, 1))
        feat: list[nn.Module] = [nn.Conv2d(spec.shape[0], widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            feat += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
        feat += [nn.Flatten(), nn.Linear(top, cfg.features), nn.Tanh()]
        return nn.Sequential(*gen), nn.Sequential(*feat)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list((self.generator if phase == "generator" else self.energy).parameters())

    def generate(self, n: int) -> Tensor:
        """G(z) for n draws of z ~ N(0, I), shaped like the data; images squashed into [0, 1]."""
        out = self.generator(torch.randn(n, self.cfg.z_dim, device=self.energy.b.device))
        if self.spec.is_image and self.cfg.sigmoid_images:
            out = torch.sigmoid(out)
        return out.view(n, *self.spec.shape)

    def entropy(self) -> Tensor:
        """H ≈ sum over batch-normalised units a_i of ½ log(2πe gamma_i²), gamma_i the unit's batch-norm scale
        (model.entropy_count=scales: over the scales, each once)."""
        scales = [m.weight for m in self.generator if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        counts = self.units_per_scale if self.cfg.entropy_count == "units" else [1] * len(scales)
        # The small constant keeps the log finite should a scale cross zero.
        return sum(
            count * 0.5 * (LOG_2PI_E + torch.log(gamma.pow(2) + 1e-8)).sum() for count, gamma in zip(counts, scales)
        )

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        n = len(batch.x)
        if phase == "energy":
            with torch.no_grad():  # the samples are fixed negatives: nothing reaches the generator
                samples = self.generate(n)
            energies = self.energy(torch.cat([batch.x, samples]))  # one pass; E has no batch statistics
            e_data, e_samples = energies[:n].mean(), energies[n:].mean()
            out = {"loss": e_data - e_samples, "energy_data": e_data, "energy_samples": e_samples}
            if self.cfg.energy_l2 > 0:
                base = torch.cat([batch.x, samples]).flatten(1).pow(2).sum(1) / self.cfg.sigma**2
                penalty = (energies - base).pow(2).mean()
                out["loss"] = out["loss"] + self.cfg.energy_l2 * penalty
                out["energy_penalty"] = penalty
            return out
        with frozen(self.energy):  # gradients flow through E to the samples only
            e_samples = self.energy(self.generate(n)).mean()
        entropy = self.entropy()
        return {"loss": e_samples - self.cfg.entropy_weight * entropy, "energy_samples": e_samples, "entropy": entropy}

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"energy_data": self.energy(x)}

    @torch.no_grad()
    def evaluate_all(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        samples = self.generate(self.cfg.eval_samples)
        metrics: dict[str, Any] = {"energy_samples": self.energy(samples).mean()}
        if self.spec.modes is not None:
            metrics.update(self.mode_metrics(samples))
        elif self.spec.shape == (2,):
            metrics.update(self.closeness_metrics(x, self.generate(len(x) // 2)))
        return metrics

    def mode_metrics(self, samples: Tensor) -> dict[str, Any]:
        """Mode coverage and sample quality on a mixture (coverage.mode_metrics)."""
        return mode_metrics(samples, self.spec.modes, self.spec.mode_std, self.cfg.mode_min_samples)

    closeness_metrics = staticmethod(closeness_metrics)

    @torch.no_grad()
    def figures(self, x: Tensor, y: Tensor) -> dict[str, Scatter | Heatmap]:
        if self.spec.shape != (2,):
            return {}
        samples = self.generate(self.cfg.eval_samples)
        # The grid spans the data with a quarter of its range to spare on each side.
        low, high = x.min(0).values, x.max(0).values
        low, high = low - 0.25 * (high - low), high + 0.25 * (high - low)
        steps = 200
        gx, gy = torch.linspace(low[0], high[0], steps), torch.linspace(low[1], high[1], steps)
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).to(x)  # (steps, steps, 2), row i at gy[i]
        energy = self.energy(grid.view(-1, 2)).view(steps, steps)
        extent = (float(low[0]), float(high[0]), float(low[1]), float(high[1]))
        return {
            "samples": Scatter(samples, title="generator samples", background=x),
            "energy": Heatmap(energy, extent, title="energy E(x)", points=x),
        }

    @torch.no_grad()
    def sample(self, n: int) -> Optional[Tensor]:
        return self.generate(n)
