"""The textbook exact sum over y for M2, ADGM and SDGM: the baseline of benchmark.py, beside it, and a
check of the models' own exact sum (tests/test_semi_supervised.py).

Every unlabelled x is tiled over the K labels, the labelled x keep their own labels, and all rows
go through the networks at once; one-hot y is concatenated to every first layer that sees it, and
q(a|x) runs on every row, so that what does not depend on y is recomputed for each label (the
classifier q(y|.) does not see y and runs once per x; with batch normalisation q(a|x) runs once per x too,
so that its batch statistics are the examples'). Built from a real model, its parameters are
copies holding the same numbers, and it draws its standard normal noise in the model's order: with
the same seed it gives the same loss terms as the model's exact sum.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.contract import Batch
from dgm_run.device import forked_rng
from dgm_run.models.nn import PartsLinear, kl_standard_normal, normal_log_prob, standard_normal_log_prob
from dgm_run.models.semi_supervised.auxiliary import AuxiliaryModel
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.objective import classifier_terms, objective
from dgm_run.models.semi_supervised.sdgm import SDGM


def joined(*layers: Optional[nn.Module]) -> nn.Linear:
    """One Linear on the concatenated inputs of several layers (Linear or PartsLinear; None: absent):
    the same numbers, one matmul."""
    parts = [
        part
        for layer in layers
        if layer is not None
        for part in (layer.parts if isinstance(layer, PartsLinear) else [layer])
    ]
    first = parts[0]
    out = nn.Linear(
        sum(p.in_features for p in parts), first.out_features, device=first.weight.device, dtype=first.weight.dtype
    )
    with torch.no_grad():
        out.weight.copy_(torch.cat([p.weight for p in parts], 1))
        out.bias.copy_(next(p.bias for p in parts if p.bias is not None))
    return out


def gaussian(params: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A draw of N(mu, exp(logvar)) from the network output [mu, logvar] and standard normal eps."""
    mu, logvar = params.chunk(2, dim=-1)
    return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class StraightforwardSemiSupervised(nn.Module):
    """The textbook exact sum of a model (see the module doc); `loss` as the model's."""

    def __init__(self, model: M2 | AuxiliaryModel) -> None:
        super().__init__()
        self.model_ref = [model]  # log_px, alpha, cfg: not this module's parameters
        self.k = model.n_classes
        self.auxiliary = isinstance(model, AuxiliaryModel)
        self.skip = isinstance(model, SDGM)  # p(x|a,y,z) and p(a|y,z)
        self.conditional_p_a = self.auxiliary and model.cfg.p_a == "conditional"
        # q(y|.): M2's on x; ADGM's on [a, x] through one concatenated first layer.
        self.q_y = (
            nn.Sequential(joined(model.q_y_in), *copy.deepcopy(model.q_y))
            if self.auxiliary
            else copy.deepcopy(model.q_y)
        )
        self.q_z_first = joined(model.q_z_in.example, model.q_z_in.y)  # [(a,) x, y]
        self.q_z = copy.deepcopy(model.q_z)
        self.p_x_first = joined(model.p_x_in.example, model.p_x_in.row, model.p_x_in.y)  # [(a,) z, y]
        self.p_x = copy.deepcopy(model.p_x)
        if self.auxiliary:
            self.q_a = copy.deepcopy(model.q_a)
        if self.conditional_p_a:
            self.p_a_first = joined(model.p_a_in.example, model.p_a_in.row, model.p_a_in.y)  # [(x,) z, y]
            self.p_a = copy.deepcopy(model.p_a)

    @property
    def model(self) -> M2 | AuxiliaryModel:
        return self.model_ref[0]

    def log_weight(self, x: Tensor, onehot: Tensor, q_a: Optional[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """log p(x, y, latents) - log q(latents|x, y) per row, every input concatenated with onehot(y); q_a:
        a with the mean and log-variance of q(a|x), per row. model.kl=analytic: the training bound's closed
        forms, -KL(q || N(0, I)), for z and for a under p_a=standard."""
        m = self.model
        analytic = m.cfg.kl == "analytic"
        sees_a = self.auxiliary and m.cfg.q_z_sees_a
        a = q_a[0] if q_a is not None else None
        params = self.q_z(self.q_z_first(torch.cat([a, x, onehot] if sees_a else [x, onehot], -1)))
        z, mu_z, logvar_z = gaussian(params, torch.randn(len(x), m.cfg.z_dim, device=x.device, dtype=x.dtype))
        out = self.p_x(self.p_x_first(torch.cat([a, z, onehot] if self.skip else [z, onehot], -1)))
        log_w = (
            m.log_px(out, x)
            + m.log_prior_y
            + (
                -kl_standard_normal(mu_z, logvar_z)
                if analytic
                else standard_normal_log_prob(z) - normal_log_prob(z, mu_z, logvar_z)
            )
        )
        if self.auxiliary:
            a, mu_a, logvar_a = q_a
            if self.conditional_p_a:
                p_a_in = torch.cat([z, onehot] if self.skip else [x, z, onehot], -1)
                mu_p, logvar_p = self.p_a(self.p_a_first(p_a_in)).chunk(2, dim=-1)
                log_w = log_w + normal_log_prob(a, mu_p, logvar_p) - normal_log_prob(a, mu_a, logvar_a)
            elif analytic:
                log_w = log_w - kl_standard_normal(mu_a, logvar_a)
            else:
                log_w = log_w + standard_normal_log_prob(a) - normal_log_prob(a, mu_a, logvar_a)
        return log_w

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        m, k, repeat = self.model, self.k, self.model.cfg.samples
        x_l = batch.x_labelled.flatten(1).repeat(repeat, 1)
        y_l = batch.y_labelled.repeat(repeat)
        x_u = batch.x.flatten(1).repeat(repeat, 1)
        n_l, b = len(x_l), len(x_u)
        # Rows: the labelled examples with their labels, then each unlabelled example with each label.
        x = torch.cat([x_l, x_u.repeat_interleave(k, 0)])
        onehot = torch.cat([F.one_hot(y_l, k), torch.eye(k, device=x.device, dtype=y_l.dtype).repeat(b, 1)]).to(x)
        first = torch.cat([torch.arange(n_l), n_l + k * torch.arange(b)]).to(x.device)  # each example's first row
        q_a = None
        if self.auxiliary:  # q(a|x) on every row: K times per unlabelled example, one draw per example
            eps = torch.randn(n_l + b, m.cfg.a_dim, device=x.device, dtype=x.dtype)
            if m.cfg.batch_norm:  # its batch statistics are the examples': once per example, then tiled
                rows = torch.cat([torch.arange(n_l), n_l + torch.arange(b).repeat_interleave(k)]).to(x.device)
                params = self.q_a(x[first])[rows]
            else:
                params = self.q_a(x)
            q_a = gaussian(params, torch.cat([eps[:n_l], eps[n_l:].repeat_interleave(k, 0)]))
            logits = self.q_y(torch.cat([q_a[0][first], x[first]], -1))
        else:
            logits = self.q_y(x[first])
        log_w = self.log_weight(x, onehot, q_a)
        log_q, cls = classifier_terms(logits, y_l, m.draws_averaged, m.cross_entropy_of_mean)
        return objective(
            log_w[:n_l], log_w[n_l:].view(b, k), log_q, cls, m.alpha, m.draws_averaged, m.cfg.reduction == "sums"
        )


def reference_for(model: nn.Module) -> Optional[StraightforwardSemiSupervised]:
    """The straightforward reference of a model that sums y out exactly (M2, ADGM, SDGM); None for others."""
    if isinstance(model, (M2, AuxiliaryModel)) and model.cfg.marginalize == "exact":
        return StraightforwardSemiSupervised(model)
    return None


def compare(
    model: nn.Module, reference: StraightforwardSemiSupervised, batch: Batch, seed: int = 1234, autocast: Any = None
) -> dict[str, float]:
    """Both losses from the same seed, without gradients and leaving the RNG as it was: the model's loss,
    the reference's, and the largest absolute and relative differences over the loss terms."""
    values = []
    for loss in (model.loss, reference.loss):
        with forked_rng(batch.x.device), torch.no_grad(), autocast or contextlib.nullcontext():
            torch.manual_seed(seed)
            values.append({name: t.double() for name, t in loss("elbo", batch).items()})
    real, straight = values
    diffs = {n: (real[n] - straight[n]).abs() for n in real if n in straight}  # not the model's extras (kl_weight)
    return {
        "loss": float(real["loss"]),
        "reference_loss": float(straight["loss"]),
        "max_abs_diff": max(float(d) for d in diffs.values()),
        "max_rel_diff": max(float(d / real[n].abs().clamp_min(1e-12)) for n, d in diffs.items()),
    }
