"""M2: the semi-supervised generative model of Kingma et al. 2014 (arXiv 1406.5298).

q(y|x) q(z|x,y), p(x|y,z) p(y) p(z) with p(y) uniform and p(z) standard normal. Labelled
digits contribute -L(x,y) (the negative ELBO) and alpha * -log q(y|x); unlabelled digits
the bound with y summed out exactly: U(x) = sum_y q(y|x) (-L(x,y)) - H(q(y|x)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm_run.config import check, check_choice, check_positive
from dgm_run.data.base import Batch, DataSpec
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel, ModelConfig
from dgm_run.models.nn import ACTIVATIONS, LabelledInput, bernoulli_log_prob, kl_standard_normal, mlp


class M2(GenerativeModel):
    @dataclass
    class Config(ModelConfig):
        _target_: str = "dgm_run.models.m2.M2"
        z_dim: int = 50
        hidden: list[int] = field(default_factory=lambda: [500])
        activation: str = "softplus"
        # Weight of the classification term on the mean labelled cross-entropy;
        # null: 0.1 * N / N_l, the paper's alpha = 0.1 N on sums over the data set.
        alpha: Optional[float] = None

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "z_dim")
            check(len(self.hidden) > 0, "hidden", "needs at least one layer")
            check_choice(self, "activation", tuple(ACTIVATIONS))
            check(self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0 (got {self.alpha})")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if not spec.semi_supervised:
            raise UserError("model=m2 needs labelled data: use data=mnist_100labels or set data.n_labels")
        x_dim, k = math.prod(spec.shape), spec.n_classes
        self.alpha = cfg.alpha if cfg.alpha is not None else 0.1 * spec.n_train / spec.n_labels
        act = ACTIVATIONS[cfg.activation]
        self.classifier = mlp(x_dim, cfg.hidden, k, cfg.activation)  # q(y|x)
        self.encoder_in = LabelledInput(x_dim, k, cfg.hidden[0])  # q(z|x,y)
        self.encoder = nn.Sequential(act(), mlp(cfg.hidden[0], cfg.hidden[1:], 2 * cfg.z_dim, cfg.activation))
        decoder_hidden = cfg.hidden[::-1]
        self.decoder_in = LabelledInput(cfg.z_dim, k, decoder_hidden[0])  # p(x|y,z)
        self.decoder = nn.Sequential(act(), mlp(decoder_hidden[0], decoder_hidden[1:], x_dim, cfg.activation))
        self.log_prior_y = -math.log(k)

    def neg_elbo(self, x: Tensor, encoder_pre: Tensor, label_dec: Tensor, eps: Tensor) -> Tensor:
        """-L(x,y) from the first encoder layer's pre-activation for (x, y) and y's decoder column.

        Shapes broadcast: (B, D) with (B, H) for given labels, (B, 1, D) with (B, K, H) for all.
        """
        mu, logvar = self.encoder(encoder_pre).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(self.decoder_in.u(z) + label_dec)
        return -bernoulli_log_prob(logits, x) + kl_standard_normal(mu, logvar) - self.log_prior_y

    def labelled_neg_elbo(self, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        """-L(x, y) for given labels, (B,)."""
        pre = self.encoder_in.u(x) + self.encoder_in.label_columns[y]
        return self.neg_elbo(x, pre, self.decoder_in.label_columns[y], eps)

    def all_labels_neg_elbo(self, x: Tensor, eps: Tensor) -> Tensor:
        """-L(x, y) for every label y, (B, K); x's part of the first layer is computed once."""
        pre = self.encoder_in.u(x).unsqueeze(1) + self.encoder_in.label_columns  # (B, K, H)
        return self.neg_elbo(x.unsqueeze(1), pre, self.decoder_in.label_columns, eps)

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        x_l, y_l, x_u = batch.x_labelled.flatten(1), batch.y_labelled, batch.x.flatten(1)
        z_dim, k = self.cfg.z_dim, self.spec.n_classes
        labelled = self.labelled_neg_elbo(x_l, y_l, torch.randn(len(x_l), z_dim, device=x_l.device))
        cls = F.cross_entropy(self.classifier(x_l), y_l)
        log_q = F.log_softmax(self.classifier(x_u), dim=-1)  # (B, K)
        q = log_q.exp()
        neg = self.all_labels_neg_elbo(x_u, torch.randn(len(x_u), k, z_dim, device=x_u.device))
        entropy = -(q * log_q).sum(-1)
        unlabelled = (q * neg).sum(-1) - entropy
        loss = labelled.mean() + unlabelled.mean() + self.alpha * cls
        return {"loss": loss, "labelled": labelled.mean(), "unlabelled": unlabelled.mean(), "cls": cls,
                "entropy": entropy.mean()}

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        wrong = (self.classifier(x.flatten(1)).argmax(-1) != y).float()
        return {"error": wrong, "accuracy": 1.0 - wrong}

    def _decode_mean(self, z: Tensor, y: Tensor) -> Tensor:
        logits = self.decoder(self.decoder_in.u(z) + self.decoder_in.label_columns[y])
        return torch.sigmoid(logits).view(len(z), *self.spec.shape)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Class-conditional samples, the labels cycling 0, 1, ..., K-1 along the grid."""
        device = self.decoder_in.u.weight.device
        y = torch.arange(n, device=device) % self.spec.n_classes
        return self._decode_mean(torch.randn(n, self.cfg.z_dim, device=device), y)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        y = self.classifier(flat).argmax(-1)
        mu, _ = self.encoder(self.encoder_in.u(flat) + self.encoder_in.label_columns[y]).chunk(2, dim=-1)
        return self._decode_mean(mu, y)
