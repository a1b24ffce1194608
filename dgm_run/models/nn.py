"""Building blocks shared by the models: MLPs and the log-densities of the ELBO."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
LOG_2PI = math.log(2 * math.pi)
# Network rows per pass of a chunked evaluation (importance samples, draws of a). On a CPU moderate
# passes beat large ones: their activations are reused from the allocator and stay in cache, where a
# large fresh tensor is page-faulted in on every pass. A GPU wants large passes to stay busy; there the
# bound is memory (every tensor of a pass holds rows x features floats).
EVAL_CHUNK_ROWS = {"cpu": 5_000}
EVAL_CHUNK_ROWS_DEFAULT = 100_000
# model.init: default (PyTorch's), glorot (the SDGM authors' Lasagne code), glorot_all (the ADGM code behind the
# authors' log), normal_1e-3 (Kingma's M2 code).
INIT_SCHEMES = ("default", "glorot", "glorot_all", "normal_1e-3")
# The authors' near-zero weights: the Gaussian heads of ADGM/SDGM, every weight of Kingma's M2.
SMALL_INIT_STD = 1e-3


class RowBatchNorm(nn.BatchNorm1d):
    """Batch normalisation of the last dimension over every row of a (..., features) tensor: draws of a
    (n, B, features) are rows as examples are. eps 1e-4, Lasagne's BatchNormLayer's (the SDGM authors')."""

    def __init__(self, features: int) -> None:
        super().__init__(features, eps=1e-4)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str, batch_norm: bool = False) -> nn.Sequential:
    """Linear layers of sizes in_dim -> *hidden -> out_dim, `activation` between them, each hidden layer
    batch-normalised before its activation with `batch_norm`."""
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.extend([*([RowBatchNorm(b)] if batch_norm else []), ACTIVATIONS[activation]()])
    return nn.Sequential(*layers)


def last_linear(network: nn.Module) -> nn.Linear:
    """The output layer of a network: its last Linear."""
    return [m for m in network.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def initialize(
    model: nn.Module,
    scheme: str,
    activation: str,
    gaussian_heads: Sequence[nn.Module],
    output_heads: Sequence[nn.Module],
) -> None:
    """Every Linear of `model` initialised by `scheme` (INIT_SCHEMES); `default` leaves PyTorch's as it is.

    glorot, the ADGM/SDGM authors': Glorot-normal weights, with the ReLU gain sqrt(2) on hidden layers
    (they use it for rectifier and softplus units, gain 1 for others) and gain 1 on the `output_heads`
    (logits of q(y|.), a Bernoulli decoder); N(0, 1e-3^2) on the `gaussian_heads` (mean and log-variance
    of a Gaussian), so that every Gaussian starts at about N(0, I); biases zero (theirs: N(0, 1e-3^2)).
    A head is the last Linear of the network given; every other Linear is hidden, each part of a split
    first layer with its own fans, as the authors' separate layers. glorot_all, the ADGM code behind the
    authors' log (ml-lab/auxiliary-deep-generative-models models/adgmssl.py): as glorot, but the Gaussian
    heads Glorot-normal with gain 1 like the other heads (there the classifier's later layers are
    Glorot-uniform, of the same variance). normal_1e-3, Kingma's M2 code: every weight N(0, 1e-3^2),
    biases zero.
    """
    if scheme == "default":
        return
    gaussian = {id(last_linear(n)) for n in gaussian_heads} if scheme != "glorot_all" else set()
    outputs = {id(last_linear(n)) for n in [*output_heads, *gaussian_heads]}
    gain = math.sqrt(2.0) if activation in ("relu", "softplus") else 1.0
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        if scheme == "normal_1e-3" or id(layer) in gaussian:
            nn.init.normal_(layer.weight, std=SMALL_INIT_STD)
        else:
            nn.init.xavier_normal_(layer.weight, gain=1.0 if id(layer) in outputs else gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def chunks(total: int, rows_each: int, device: torch.device) -> Iterator[int]:
    """Sizes of the chunks in which to take `total` samples of `rows_each` network rows each."""
    per_chunk = max(1, EVAL_CHUNK_ROWS.get(device.type, EVAL_CHUNK_ROWS_DEFAULT) // rows_each)
    for start in range(0, total, per_chunk):
        yield min(per_chunk, total - start)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) = x . logits - sum softplus(logits), summed over the last dimension; x in
    [0, 1] broadcasts against logits (one digit, its logits under every label). Fewer passes over
    the logits than binary_cross_entropy_with_logits, which also copies the broadcast x: faster
    without gradients on CPU, as fast with them, and the same gradient, x - sigmoid(logits).
    In float32 even under bf16 autocast, which would otherwise sum 784 terms in bfloat16."""
    logits = logits.float()
    return (logits * x).sum(-1) - F.softplus(logits).sum(-1)


def normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class PartsLinear(nn.Module):
    """A Linear on the concatenation of several inputs, one weight per input: W_1 u_1 + W_2 u_2 + ... + b.

    The same numbers as the concatenated layer, but its backward computes no gradient for an
    input that needs none (the data x beside a sampled a), where the concatenated layer's
    backward computes it for every column.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.parts = nn.ModuleList(nn.Linear(d, out_dim, bias=bias and i == 0) for i, d in enumerate(in_dims))

    def forward(self, *inputs: Tensor) -> Tensor:
        out = self.parts[0](inputs[0])
        for layer, u in zip(self.parts[1:], inputs[1:]):
            # addmm adds the product into the running sum in one pass; otherwise the parts broadcast,
            # e.g. draws (n, B, .) of a beside x (B, .): x's part is then computed once per x.
            out = torch.addmm(out, u, layer.weight.T) if u.dim() == 2 == out.dim() else out + layer(u)
        return out
