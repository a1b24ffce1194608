"""Importance weights: the one-sample log weight of a bound, and the importance-weighted log-likelihood
log 1/k sum_i w_i of Burda et al. 2016, its k draws taken in chunks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from dgm_run.models.nn import chunks


def iw_log_likelihood(log_weights: Callable[[int], Tensor], k: int, rows_each: int, device: torch.device) -> Tensor:
    """log 1/k sum exp(log w) over k importance draws, (B,). `log_weights(n)` returns n draws' log
    weights, (n, B, ...); every entry after the example axis (e.g. each label's) is a term of the sum
    too. The draws are taken in chunks sized by `nn.chunks` for `rows_each` network rows per draw."""
    log_w = torch.cat([log_weights(n) for n in chunks(k, rows_each, device)])
    return torch.logsumexp(log_w.transpose(0, 1).flatten(1), dim=1) - math.log(k)


def importance_log_weight(
    log_px: Tensor, log_p: Sequence[Union[Tensor, float]], log_q: Sequence[Tensor], kl_weight: Optional[Tensor] = None
) -> Tensor:
    """log w = log p(x|.) + sum log_p - sum log_q, added left to right. With `kl_weight` (the warm-up),
    log p(x|.) + kl_weight * (sum log_p - sum log_q): every term but log p(x|.) is the KL part."""
    if kl_weight is None:
        total = log_px
        for term in log_p:
            total = total + term
        for term in log_q:
            total = total - term
        return total
    kl_part = log_p[0]
    for term in log_p[1:]:
        kl_part = kl_part + term
    for term in log_q:
        kl_part = kl_part - term
    return log_px + kl_weight * kl_part
