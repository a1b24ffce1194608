"""M1+M2 (Kingma et al. 2014): M2 trained on the latent features z1 of an M1 (a VAE).

M1 (phase m1):   p(z1) = N(0, I),  p(x|z1),  q(z1|x)                      the VAE's loss (vae/vae.py)
M2 (phase m2):   p(y), p(z2), p(z1|y,z2) Gaussian,  q(y|z1), q(z2|z1,y)   M2's loss (m2.py) on z1 ~ q(z1|x)

Two phases: `m1` trains the VAE on the digits, `m2` trains an M2 with a Gaussian
likelihood on z1 ~ q(z1|x) (M1 frozen). The default schedule pretrains M1 for
`m1_epochs` epochs and then trains M2; with `m1_checkpoint` (the checkpoint of a `vae`
run with the same M1 sizes) M1 is loaded instead and `m1_epochs` should be 0.
`m1_likelihood` is M1's p(x|z1); `likelihood` M2's p(z1|y,z2), Gaussian: the features are not
in [0, 1]. With `kl_warmup_epochs`, each part's warm-up starts at the first epoch of its phase.

Kingma's code (learn_yz_x_ss.py, gpulearn_z_x.py of dpkingma/nips14-ssl) differs from the plain
recipe in three ways, each an option here: M1 trains on binarized digits but M2's features are
those of the grey-level digits (`m1_binarize` with data.binarize=false); M1's units whose
posterior mean barely varies over the data are left out of M2 (`m1_prune_threshold`); and q(z1|x)
of every training digit is computed once, z1 drawn from it at every M2 step (`m1_features=once`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dgm_run.checks import check, check_choice, check_positive, check_sizes
from dgm_run.contract import Batch, DataSpec
from dgm_run.models.base import GenerativeModel, ScheduleEntry
from dgm_run.models.nn import LOG_2PI, reparameterize
from dgm_run.models.semi_supervised.class_conditional import ClassConditional
from dgm_run.models.semi_supervised.family import SemiSupervisedConfig
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.vae.likelihoods import LIKELIHOODS
from dgm_run.models.vae.vae import VAE

log = logging.getLogger(__name__)

# m1_features=once: the units are chosen over the posterior means of the first this many training digits
# (Kingma's learn_yz_x_ss.py: 1,000 unlabelled digits).
PRUNE_DIGITS = 1000
# Training digits per pass of M1's encoder when the features are computed once.
FEATURE_CHUNK = 10_000


class FeatureM2(M2):
    """M2 on M1's features z1, with `keep` (1: kept, 0: pruned) over M1's units. The features arrive
    multiplied by it, so M2's networks see a pruned unit as a constant 0, and log p(z1|y,z2) sums over
    the kept units only: a constant feature's density would grow without bound as its variance shrank.
    The networks keep their full size whatever the mask, so shapes stay fixed (a captured step need not
    change), and compute what an M2 on the kept units alone would: a pruned unit's input weights see
    only zeros and its outputs reach no loss."""

    def __init__(self, cfg: M2.Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.register_buffer("keep", torch.ones(self.x_dim))

    def log_px(self, out: Tensor, x: Tensor) -> Tensor:
        mu, logvar = out.chunk(2, dim=-1)
        return (self.keep * -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))).sum(-1)


class M1M2(ClassConditional, GenerativeModel):
    phases = ("m1", "m2")

    @dataclass
    class Config(SemiSupervisedConfig):
        _target_: str = "dgm_run.models.semi_supervised.m1m2.M1M2"
        m1_z_dim: int = 50
        m1_hidden: list[int] = field(default_factory=lambda: [500, 500])
        m1_activation: str = "softplus"
        # M1's p(x|z1): bernoulli for pixels in [0, 1], gaussian for continuous data.
        m1_likelihood: str = "bernoulli"
        # M2's p(z1|y,z2): M1's features are continuous.
        likelihood: str = "gaussian"
        m1_epochs: int = 10
        m1_checkpoint: Optional[str] = None
        # M2 leaves out M1's units whose posterior mean barely varies over the data: a standard deviation
        # at most this over the digits of M2's first batch, or with m1_features=once over the first 1,000
        # training digits (Kingma's code: 0.1, over 1,000 unlabelled training digits). null: every unit.
        m1_prune_threshold: Optional[float] = None
        # M1 trains on a fresh Bernoulli draw of each batch's pixels, made here, while M2's features come
        # from the digits as the data serves them: with data.binarize=false, M1 models binarized digits and
        # M2 the features of the grey-level ones, as in Kingma's code.
        m1_binarize: bool = False
        # How M2 gets M1's q(z1|x). step: M1 encodes each batch's digits at every M2 step. once (Kingma's
        # learn_yz_x_ss.py): the mean and log-variance of every training digit's grey levels are computed
        # when M2 starts and z1 is drawn from them at every step: the same numbers as step for digits served
        # unbinarized (data.binarize=false), without M1's pass per step; the units are then chosen over the
        # first 1,000 training digits. M1 must not train once M2 has started.
        m1_features: str = "step"
        # Empty: M1 alone until epoch m1_epochs, then M2 (the phases follow m1_epochs, whatever it is set to).
        schedule: list[ScheduleEntry] = field(default_factory=list)

        def __post_init__(self) -> None:
            if not self.schedule:
                self.schedule = [ScheduleEntry("m1", 1, 0, self.m1_epochs), ScheduleEntry("m2", 1, self.m1_epochs)]
            super().__post_init__()
            check(self.m1_epochs >= 0, "m1_epochs", f"must be >= 0 (got {self.m1_epochs})")
            check_positive(self, "m1_z_dim")
            check_choice(self, "m1_likelihood", tuple(LIKELIHOODS))
            check(
                self.likelihood == "gaussian",
                "likelihood",
                "M2 models M1's features, which are not in [0, 1]: "
                f"only gaussian is allowed (got {self.likelihood}); model.m1_likelihood is M1's",
            )
            check_sizes(self, "m1_hidden")
            check(
                self.m1_prune_threshold is None or self.m1_prune_threshold >= 0,
                "m1_prune_threshold",
                f"must be >= 0 or null (got {self.m1_prune_threshold})",
            )
            check_choice(self, "m1_features", ("step", "once"))
            check(
                not self.m1_binarize or self.m1_likelihood == "bernoulli",
                "m1_binarize",
                f"binary pixels need a Bernoulli M1 (got model.m1_likelihood={self.m1_likelihood})",
            )

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.m1 = VAE(
            VAE.Config(
                z_dim=cfg.m1_z_dim,
                hidden=cfg.m1_hidden,
                activation=cfg.m1_activation,
                likelihood=cfg.m1_likelihood,
                kl_warmup_epochs=cfg.kl_warmup_epochs,
            ),
            spec,
        )
        features = DataSpec(
            shape=(cfg.m1_z_dim,),
            n_classes=spec.n_classes,
            is_image=False,
            n_train=spec.n_train,
            n_labels=spec.n_labels,
            unit_interval=False,
        )
        m2_fields = {k: getattr(cfg, k) for k in SemiSupervisedConfig.__dataclass_fields__ if k != "_target_"}
        self.m2 = FeatureM2(M2.Config(**m2_fields), features)
        # Each part's KL warm-up starts when its phase starts training.
        for part, phase in ((self.m1, "m1"), (self.m2, "m2")):
            part.warmup_from = min((e.from_epoch for e in cfg.schedule if e.phase == phase), default=0)
        # M2's training steps so far, counted on the device: the units are chosen at the first, and an
        # evaluation before it says that the classifier is untrained.
        self.register_buffer("m2_steps", torch.zeros((), dtype=torch.long))
        # m1_features=once: the training digits (training_set) and, from M2's first step in this process on,
        # the mean and log-variance of q(z1|x) of each. Not in checkpoints: a resumed run recomputes them.
        self.examples: Optional[Callable[[Tensor], Tensor]] = None
        self.n_train = 0
        self.table: Optional[tuple[Tensor, Tensor]] = None

    def pretrained(self) -> dict[str, tuple[nn.Module, str]]:
        # The checkpoint of a `vae` run, or of an `m1m2` run whose M1 weights are under `m1.`.
        return {"model.m1_checkpoint": (self.m1, self.cfg.m1_checkpoint)} if self.cfg.m1_checkpoint else {}

    def training_set(self, examples: Callable[[Tensor], Tensor], n: int) -> None:
        self.examples, self.n_train, self.table = examples, n, None

    @torch.no_grad()
    def feature_table(self) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of q(z1|x) of every training digit, (N, z1) each, computed by the
        frozen M1 at the first call (M2's first step; a host branch, taken in an eager step before any
        capture) in passes of FEATURE_CHUNK digits."""
        if self.table is None:
            if self.examples is None:
                raise RuntimeError(
                    "model.m1_features=once needs the training set (training_set) before M2's first step"
                )
            device = self.m2_steps.device
            parts = [
                self.m1.encode(
                    self.examples(torch.arange(start, min(start + FEATURE_CHUNK, self.n_train), device=device)).flatten(
                        1
                    )
                )
                for start in range(0, self.n_train, FEATURE_CHUNK)
            ]
            self.table = torch.cat([mu for mu, _ in parts]), torch.cat([logvar for _, logvar in parts])
            threshold = self.cfg.m1_prune_threshold
            if threshold is not None:  # how many units M2 models says whether M1 has trained long enough
                spread = self.table[0][:PRUNE_DIGITS].std(0, correction=0)
                log.info(
                    "m1m2: %d of M1's %d units have posterior means that vary by more than %g over the first "
                    "%d training digits (model.m1_prune_threshold); M2 models those",
                    int((spread > threshold).sum()),
                    len(spread),
                    threshold,
                    min(PRUNE_DIGITS, self.n_train),
                )
        return self.table

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list((self.m1 if phase == "m1" else self.m2).parameters())

    def m1_input(self, x: Tensor) -> Tensor:
        """The digits as M1 models them: as served, or with m1_binarize a fresh Bernoulli draw of their pixels."""
        return (torch.rand_like(x) < x).float() if self.cfg.m1_binarize else x

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """The mean of q(z1|x) from the frozen M1, pruned units 0: what M2 classifies and encodes at test time."""
        return self.m1.encode(x.flatten(1))[0] * self.m2.keep

    @torch.no_grad()
    def choose_units(self, mu: Tensor) -> None:
        """At M2's first step: keep the units whose posterior mean mu (B, z1) has a standard deviation
        above the threshold over the batch. torch.where, not a branch on the step count, so that the
        step makes no host decision and stays capturable; later steps leave the mask as it is."""
        chosen = (mu.std(0, correction=0) > self.cfg.m1_prune_threshold).to(self.m2.keep)
        self.m2.keep.copy_(torch.where(self.m2_steps == 0, chosen, self.m2.keep))

    def loss(self, phase: str, batch: Batch) -> dict[str, Tensor]:
        if phase == "m1":
            return self.m1.loss("elbo", Batch(x=self.m1_input(batch.x), progress=batch.progress))
        n = len(batch.x)
        with torch.no_grad():
            if self.cfg.m1_features == "once":  # the unlabelled and the labelled digits' rows of the table
                table_mu, table_logvar = self.feature_table()
                index = torch.cat([batch.index, batch.index_labelled])
                mu, logvar = table_mu[index], table_logvar[index]
                chosen_over = table_mu[:PRUNE_DIGITS]
            else:  # one pass of the frozen M1 over the unlabelled and the labelled digits
                mu, logvar = self.m1.encode(torch.cat([batch.x, batch.x_labelled]).flatten(1))
                chosen_over = mu
            if self.cfg.m1_prune_threshold is not None:
                self.choose_units(chosen_over)
            z1 = reparameterize(mu, logvar) * self.m2.keep
        self.m2_steps.add_(1)
        return self.m2.loss(
            "elbo", Batch(x=z1[:n], x_labelled=z1[n:], y_labelled=batch.y_labelled, progress=batch.progress)
        )

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.m2.classify(self.features(x))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        flat = x.flatten(1)
        x1 = self.m1_input(flat)  # M1's bound is on the digits it models: binarized afresh with m1_binarize
        return {"m1_elbo": self.m1.elbo(x1, *self.m1.encode(x1))}

    @torch.no_grad()
    def evaluate_all(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        if not self.m2_steps:  # a host read, in the evaluation: the training step never waits for it
            start = self.m2.warmup_from
            log.warning(
                "m1m2: M2 has not trained yet (its phase starts at epoch %d): eval/error and eval/accuracy "
                "are an untrained classifier's, about chance; to train M2 a run needs trainer.max_epochs "
                "above %d and a trainer.max_steps that gets there",
                start,
                start,
            )
        return {}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Class-conditional samples: z1 from M2's p(z1|y,z2), pixels from M1's decoder."""
        return self.m1.decode(self.m2.sample(n) * self.m2.keep)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.m1.reconstruct(x)

    def decode_style(self, z: Tensor, y: Tensor) -> Tensor:
        """Pixels of z2 with labels y: through M2's p(z1|y,z2) and M1's decoder."""
        return self.m1.decode(self.m2.generate(z, y) * self.m2.keep)

    @torch.no_grad()
    def latent(self, x: Tensor) -> Tensor:
        """z2 of each digit at the predicted label, from M1's mean features."""
        return self.m2.latent(self.features(x))
