"""The semi-supervised objective of M2, ADGM and SDGM, as plain functions of tensors.

Every such model has a classifier q(y|.) and, for an example and a label, a one-sample
log importance weight log w(x, y) = log p(x, y, latents) - log q(latents | x, y). The
objective on a batch is

    labelled:    -log w(x, y)                      + alpha * -log q(y|.)
    unlabelled:  -sum_y q(y|.) log w(x, y) - H(q(y|.))    (y summed out exactly)
                 or a Gumbel-softmax relaxed sample of y in place of the sum,

each part averaged over its examples (`model.reduction=means`), or the data set's sum objective
per example of the batch (`sums`, Kingma's M2 code). With `model.samples` S draws, each example
is repeated S times: independent bounds, averaged (`model.mc_average=bounds`), or the ADGM/SDGM
authors' combination: the unlabelled bound sum_y q̄(y) (1/S sum_s log w_s(x, y)) + H(q̄) with q̄ the
mean of q(y|.) over the draws, and the labelled cross-entropy the mean over the draws of -log q(y|a_s, x)
(`authors`, the ADGM code: ml-lab/auxiliary-deep-generative-models models/adgmssl.py) or that of q̄,
-log q̄(y) (`authors_sdgm`, the SDGM code: larsmaaloee/auxiliary-deep-generative-models, whose
MultinomialLogDensityLayer in lasagne_extensions/layers/density_layers.py averages q over the draws).

`model.kl=analytic` (the authors' ADGM code) takes each Gaussian latent against a standard normal prior
(z; ADGM's a under `p_a=standard`) in closed form in the training bound: -KL(q || N(0, I)) in place of
log p - log q of the draw. The expectation is the same, the variance lower; the evaluation's importance
weights stay sampled.

A model computes log w on rows, one per (example, label) pair that `Labels` asks for
(labels.py): given labels, every label (the exact sum, with what does not depend on y
computed once per x) or relaxed one-hot labels. Labelled and unlabelled examples go
through the networks in one pass (`stack`).

KL warm-up (`model.kl_warmup_epochs`, vae/family.py): the KL part of log w, everything but
log p(x|...) (the latents' log p - log q terms and log p(y)), is multiplied by the warm-up weight
in training, as the VAE's KL is: log w = log p(x|...) + weight * (log p(y) + log p(latents) -
log q(latents|x, y)). The classifier's entropy H(q(y|.)) and the labelled cross-entropy are not
weighted. Evaluation's log w is never weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dgm_run.contract import Batch


@dataclass
class Stacked:
    """A batch as one pass through the networks sees it: the labelled examples first, then the unlabelled
    ones, the whole repeated `samples` times (draw-major within each part)."""

    x: Tensor  # (S * (B_l + B_u), D)
    y_labelled: Tensor  # (S * B_l,)
    n_unlabelled: int  # S * B_u


def stack(batch: Batch, samples: int) -> Stacked:
    """The rows of `batch` for one pass, each example repeated `samples` times."""
    x_l = batch.x_labelled.flatten(1).repeat(samples, 1)
    y_l = batch.y_labelled.repeat(samples)
    x_u = batch.x.flatten(1).repeat(samples, 1)
    return Stacked(torch.cat([x_l, x_u]), y_l, len(x_u))


def mean_over_draws(t: Tensor, draws: int) -> Tensor:
    """Per example, the mean over `draws` draws of a tensor laid out draw-major, (draws * B, ...) -> (B, ...)."""
    return t.view(draws, -1, *t.shape[1:]).mean(0)


def mean_q_log(logits: Tensor, draws: int) -> Tensor:
    """log q̄(y|.) per example, q̄ = 1/draws sum_s q(y|a_s, x), from logits laid out draw-major."""
    return torch.logsumexp(F.log_softmax(logits, dim=-1).view(draws, -1, logits.shape[-1]), 0) - math.log(draws)


def classifier_terms(
    logits: Tensor, y_l: Tensor, draws: int = 1, cross_entropy_of_mean: bool = False
) -> tuple[Tensor, Tensor]:
    """log q(y|.) of the unlabelled examples and the labelled cross-entropy, from the class logits of every
    row (the len(y_l) labelled rows first, y_l one label per row). draws > 1, the authors' averaging: each
    part holds `draws` draws, draw-major; the unlabelled examples' q is q̄ = 1/draws sum_s q(y|a_s, x), and
    the cross-entropy the mean over the draws of -log q(y|a_s, x), or -log q̄(y) with `cross_entropy_of_mean`."""
    logits_l, logits_u = logits.split([len(y_l), len(logits) - len(y_l)])
    if draws == 1:
        return F.log_softmax(logits_u, dim=-1), F.cross_entropy(logits_l, y_l)
    if cross_entropy_of_mean:
        log_q_l = mean_q_log(logits_l, draws)
        return mean_q_log(logits_u, draws), F.nll_loss(log_q_l, y_l[: len(log_q_l)])
    return mean_q_log(logits_u, draws), F.cross_entropy(logits_l, y_l)


def objective(
    log_w_l: Tensor, log_w_u: Tensor, log_q: Tensor, cls: Tensor, alpha: float, draws: int = 1, sums: bool = False
) -> dict[str, Tensor]:
    """The batch's loss terms from the labelled bounds log w(x, y), (B_l,); the unlabelled ones, (B_u, K)
    for every label (summed under q(y|x)) or (B_u,) for one relaxed label; log q(y|x) of the unlabelled
    examples and the labelled cross-entropy `cls` (classifier_terms, with the same `draws`). draws > 1: the
    bounds hold that many draws, draw-major, averaged per example first (the authors'). sums: the data set's
    sum objective per example, (sum_l (-log w + alpha CE) + sum_u U) / (B_l + B_u); else each part's mean."""
    if draws > 1:
        log_w_l, log_w_u = mean_over_draws(log_w_l, draws), mean_over_draws(log_w_u, draws)
    q = log_q.exp()
    labelled = -log_w_l
    expected = (q * log_w_u).sum(-1) if log_w_u.dim() == 2 else log_w_u
    entropy = -(q * log_q).sum(-1)
    unlabelled = -(expected + entropy)
    if sums:
        n_l, n_u = len(labelled), len(unlabelled)
        loss = (labelled.sum() + unlabelled.sum() + alpha * n_l * cls) / (n_l + n_u)
    else:
        loss = labelled.mean() + unlabelled.mean() + alpha * cls
    return {
        "loss": loss,
        "labelled": labelled.mean(),
        "unlabelled": unlabelled.mean(),
        "cls": cls,
        "entropy": entropy.mean(),
    }
