"""Schemas of the config groups and the validation of a composed config.

The schemas are the one source of defaults: the dataclasses below for optimizer, device and
logger, TrainerConfig (trainer_config.py) for trainer, and for model and data the nested `Config`
class of the class their `_target_` names (see models/base.py and data/base.py). composition.py stores them in Hydra's
ConfigStore, so that the YAML files hold only what differs from a schema.

Hydra composes `configs/` into one DictConfig; `validate()` merges each group into its
dataclass schema, so that an unknown key, a wrong type or a value out of range becomes a
UserError that names the key; `complete()` fills in every schema default (what a run saves).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import hydra.utils
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from dgm_run.checks import InvalidValue, check, check_choice, check_positive
from dgm_run.errors import UserError

# TrainerConfig has a module of its own (its size); it is a schema of this module as the others are.
from dgm_run.trainer_config import TrainerConfig


@dataclass
class PhaseOptimizerConfig:
    """Per-phase overrides of the optimizer settings; unset fields inherit."""

    lr: Optional[float] = None
    betas: Optional[list[float]] = None
    bias_correction: Optional[bool] = None
    weight_decay: Optional[float] = None
    weight_prior: Optional[float] = None
    clip_norm: Optional[float] = None
    clip_value: Optional[float] = None


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # Adam's moments divided by (1 - beta ** step); false: used as they are, as the AdaM of Kingma's M2 code does
    # (dpkingma/nips14-ssl, adam.py, which learn_yz_x_ss.py uses), whose first steps are several times Adam's.
    bias_correction: bool = True
    weight_decay: float = 0.0
    momentum: float = 0.0
    # Step decay per epoch: lr * lr_decay ** (epoch // lr_decay_every_epochs), floored at min_lr.
    lr_decay: float = 1.0
    lr_decay_every_epochs: int = 1
    min_lr: float = 0.0
    # A N(0, 1) prior on the weight matrices (not the biases), its -log density weighted by weight_prior in
    # the loss: weight_prior * W added to their gradients before the clipping (the ADGM/SDGM authors' code,
    # 1 / the rows of an epoch); 0: off. weight_decay, Adam's own, acts after the clipping and on biases too.
    weight_prior: float = 0.0
    # Before each step, per phase over its own parameters: the gradient's total norm scaled down to clip_norm,
    # then every element clamped to +-clip_value; null: off. The ADGM/SDGM authors' code: 5, then 1.
    clip_norm: Optional[float] = None
    clip_value: Optional[float] = None
    phases: dict[str, PhaseOptimizerConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self, "name", ("adam", "adamw", "sgd"))
        check(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1) (got {self.betas})",
        )
        check(0 < self.lr_decay <= 1, "lr_decay", f"must be in (0, 1] (got {self.lr_decay})")
        check_positive(self, "lr_decay_every_epochs")
        check(self.min_lr >= 0, "min_lr", f"must be >= 0 (got {self.min_lr})")
        for prefix, node in (("", self), *((f"phases.{p}.", o) for p, o in self.phases.items())):  # names the phase
            for key in ("clip_norm", "clip_value"):
                value = getattr(node, key)
                check(value is None or value > 0, prefix + key, f"must be > 0, or null for no clipping (got {value})")
            check(
                node.bias_correction in (None, True) or self.name == "adam",
                prefix + "bias_correction",
                f"false is a variant of Adam; set optimizer.name=adam (got {self.name})",
            )
            check(
                node.weight_prior is None or node.weight_prior >= 0,
                prefix + "weight_prior",
                f"must be >= 0 (got {node.weight_prior})",
            )


@dataclass
class DeviceConfig:
    # auto: the first CUDA GPU when one is visible, else the CPU.
    type: str = "auto"
    # Which CUDA GPU (null: the first); device=cuda_per_job sets it from the job number.
    index: Optional[int] = None

    def __post_init__(self) -> None:
        check_choice(self, "type", ("auto", "cpu", "cuda"))
        check(self.index is None or self.index >= 0, "index", f"must be >= 0 (got {self.index})")


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    # Number of images in the sample and reconstruction grids.
    images: int = 64
    # Test digits whose latent codes go to TensorBoard's projector at the end (models with codes).
    embedding: int = 1000

    def __post_init__(self) -> None:
        check(self.images >= 0, "images", f"must be >= 0 (got {self.images})")
        check(self.embedding >= 0, "embedding", f"must be >= 0 (got {self.embedding})")


@dataclass
class RunConfig:
    """The validated config of one run, as typed objects."""

    model: Any
    data: Any
    trainer: TrainerConfig
    optimizer: OptimizerConfig
    device: DeviceConfig
    logger: LoggerConfig
    seed: int


GROUP_SCHEMAS = {
    "trainer": TrainerConfig,
    "optimizer": OptimizerConfig,
    "device": DeviceConfig,
    "logger": LoggerConfig,
}
# The sections of a config that have a schema, in the order they are validated.
SECTIONS = (*GROUP_SCHEMAS, "model", "data")


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]


@contextlib.contextmanager
def _user_errors(schema: type, section: str) -> Iterator[None]:
    """Turn what merging into or building `schema` raises into a one-line UserError naming the key."""
    try:
        yield
    except InvalidValue as err:
        raise UserError(f"{section}.{err}") from None
    except ConfigKeyError as err:
        owner = err.object_type if dataclasses.is_dataclass(err.object_type) else schema
        raise UserError(f"{section}: unknown key '{err.key}'; allowed keys: {', '.join(_field_names(owner))}") from None
    except OmegaConfBaseException as err:
        message = str(err.msg).splitlines()[0]
        raise UserError(f"{section}.{err.full_key}: {message}") from None


def validate_section(schema: type, node: DictConfig, section: str) -> Any:
    """Merge `node` into `schema` and build the dataclass, or raise a one-line UserError."""
    with _user_errors(schema, section):
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def target_class(node: DictConfig, section: str) -> type:
    """The class a model or data config names in `_target_`."""
    target = node.get("_target_")
    if not target:
        raise UserError(f"{section}._target_ is missing: name the class to build, e.g. dgm_run.models.vae.vae.VAE")
    try:
        return hydra.utils.get_class(target)
    except Exception as err:  # hydra wraps import errors in its own types
        raise UserError(
            f"{section}._target_: cannot import '{target}' ({str(err).splitlines()[0]}); the files of "
            f"configs/{section}/ name each class's current path (a run saved by an older dgm-run may name an old one)"
        ) from None


def section_schema(cfg: DictConfig, name: str) -> type:
    """The schema of section `name` of a composed config: model and data by their `_target_`."""
    return GROUP_SCHEMAS[name] if name in GROUP_SCHEMAS else target_class(cfg[name], name).Config


def complete(cfg: DictConfig) -> DictConfig:
    """`cfg` with every schema default filled in (model and data from the `Config` of their `_target_`),
    as a plain config with its interpolations kept: what a run saves, compares and shows in HParams.
    A key or value that a schema refuses raises the UserError of `validate`."""
    full = OmegaConf.create(OmegaConf.to_container(cfg))
    for name in SECTIONS:
        schema = section_schema(full, name)
        with _user_errors(schema, name):
            full[name] = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), full[name]))
    return full


def validate(cfg: DictConfig) -> RunConfig:
    """Validate every group of a composed config; model and data by their own schemas."""
    try:  # resolve interpolations against the whole config before sections are taken apart
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise UserError(f"{err.full_key}: {str(err.msg).splitlines()[0]}") from None
    sections = {name: validate_section(section_schema(cfg, name), cfg[name], name) for name in SECTIONS}
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise UserError(f"seed: must be a non-negative integer (got {cfg.seed})")
    if not isinstance(cfg.get("auto_resume", False), bool):
        raise UserError(f"auto_resume: must be true or false (got {cfg.auto_resume})")
    iw_samples = sections["trainer"].eval_iw_samples
    if iw_samples is not None and "iw_samples" in _field_names(section_schema(cfg, "model")):
        # A trainer key that the model reads at evaluation only (TrainerConfig.eval_iw_samples); the saved
        # config keeps both values, so that resume= and evaluate= may change it.
        sections["model"].iw_samples = iw_samples
    return RunConfig(seed=cfg.seed, **sections)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The config as {"model.z_dim": 50, ...}, lists as strings: the form HParams takes."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            key = prefix[:-1]
            flat[key] = node if isinstance(node, (bool, int, float, str)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
