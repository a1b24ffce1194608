"""M1+M2 (Kingma et al. 2014): M2 trained on the latent features z1 of an M1 (a VAE).

Two phases: `m1` trains the VAE on the digits, `m2` trains an M2 with a Gaussian
likelihood on z1 ~ q(z1|x) (M1 frozen). The default schedule pretrains M1 for
`m1_epochs` epochs and then trains M2; with `m1_checkpoint` (the checkpoint of a `vae`
run with the same M1 sizes) M1 is loaded instead and `m1_epochs` should be 0.
`m1_likelihood` is M1's p(x|z1); `likelihood` M2's p(z1|y,z2), Gaussian: the features are not
in [0, 1]. With `kl_warmup_epochs`, each part's warm-up starts at the first epoch of its phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec
from dgm_run.models.base import GenerativeModel, PhaseStep
from dgm_run.models.m2 import M2
from dgm_run.models.nn import reparameterize
from dgm_run.models.semi_supervised import SemiSupervisedConfig
from dgm_run.models.vae import VAE
from dgm_run.models.vae_family import LIKELIHOODS, ClassConditional, error_and_accuracy


class M1M2(ClassConditional, GenerativeModel):
    phases = ("m1", "m2")

    @dataclass
    class Config(SemiSupervisedConfig):
        _target_: str = "dgm_run.models.m1m2.M1M2"
        m1_z_dim: int = 50
        m1_hidden: list[int] = field(default_factory=lambda: [500, 500])
        m1_activation: str = "softplus"
        # M1's p(x|z1): bernoulli for pixels in [0, 1], gaussian for continuous data.
        m1_likelihood: str = "bernoulli"
        # M2's p(z1|y,z2): M1's features are continuous.
        likelihood: str = "gaussian"
        m1_epochs: int = 10
        m1_checkpoint: Optional[str] = None
        schedule: list[PhaseStep] = field(default_factory=lambda: [PhaseStep("m1", 1, 0, 10), PhaseStep("m2", 1, 10)])

        def __post_init__(self) -> None:
            super().__post_init__()
            check(self.m1_epochs >= 0, "m1_epochs", f"must be >= 0 (got {self.m1_epochs})")
            check_positive(self, "m1_z_dim")
            check_choice(self, "m1_likelihood", tuple(LIKELIHOODS))
            check(self.likelihood == "gaussian", "likelihood", "M2 models M1's features, which are not in [0, 1]: "
                  f"only gaussian is allowed (got {self.likelihood}); model.m1_likelihood is M1's")
            check_sizes(self, "m1_hidden")

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.m1 = VAE(VAE.Config(z_dim=cfg.m1_z_dim, hidden=cfg.m1_hidden, activation=cfg.m1_activation,
                                 likelihood=cfg.m1_likelihood, kl_warmup_epochs=cfg.kl_warmup_epochs), spec)
        features = DataSpec(shape=(cfg.m1_z_dim,), n_classes=spec.n_classes, is_image=False, n_train=spec.n_train,
                            n_labels=spec.n_labels, unit_interval=False)
        m2_fields = {k: getattr(cfg, k) for k in SemiSupervisedConfig.__dataclass_fields__ if k != "_target_"}
        self.m2 = M2(M2.Config(**m2_fields), features)
        # Each part's KL warm-up starts when its phase starts training.
        for part, phase in ((self.m1, "m1"), (self.m2, "m2")):
            part.warmup_from = min((e.from_epoch for e in cfg.schedule if e.phase == phase), default=0)

    def pretrained(self) -> dict[str, tuple[nn.Module, str]]:
        # The checkpoint of a `vae` run, or of an `m1m2` run whose M1 weights are under `m1.`.
        return {"model.m1_checkpoint": (self.m1, self.cfg.m1_checkpoint)} if self.cfg.m1_checkpoint else {}

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list((self.m1 if phase == "m1" else self.m2).parameters())

    def features(self, x: Tensor, sample: bool = True) -> Tensor:
        """z1 ~ q(z1|x) from the frozen M1 (its mean when sample is False)."""
        with torch.no_grad():
            mu, logvar = self.m1.encode(x.flatten(1))
            return reparameterize(mu, logvar) if sample else mu

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        if phase == "m1":
            return self.m1.loss("elbo", batch)
        features = Batch(x=self.features(batch.x), x_labelled=self.features(batch.x_labelled),
                         y_labelled=batch.y_labelled, progress=batch.progress)
        return self.m2.loss("elbo", features)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        flat = x.flatten(1)
        mu, logvar = self.m1.encode(flat)
        return {**error_and_accuracy(self.m2.classify(mu), y), "m1_elbo": self.m1.elbo(flat, mu, logvar)}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Class-conditional samples: z1 from M2's p(z1|y,z2), pixels from M1's decoder."""
        return self.m1.decode(self.m2.sample(n))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.m1.reconstruct(x)

    def decode_style(self, z: Tensor, y: Tensor) -> Tensor:
        """Pixels of z2 with labels y: through M2's p(z1|y,z2) and M1's decoder."""
        return self.m1.decode(self.m2.generate(z, y))

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        """z2 of each digit at the predicted label, from M1's mean features."""
        return self.m2.latent(self.features(x, sample=False))
