"""One run: config -> data, model, trainer -> metrics, logs and checkpoints in the run directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from dgm_run import checkpoint
from dgm_run.config import RunConfig, flatten, target_class, validate
from dgm_run.data.base import DeviceData, Splits
from dgm_run.device import configure_precision, resolve_device
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel
from dgm_run.tensorboard import TensorBoardLogger
from dgm_run.trainer import Trainer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT = Path("checkpoints") / "last.pt"


def resumed_config(run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The saved config of `run_dir`, with trainer.* overrides applied (e.g. more epochs)."""
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: no {CONFIG_FILE} there; name the directory of a dgm-run run")
    cfg = OmegaConf.load(saved)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if not key.startswith(("trainer.", "hydra.")):
            raise UserError(f"resume: only trainer.* keys may change when resuming (got {override.input_line})")
        if not key.startswith("hydra."):
            OmegaConf.update(cfg, key, override.value(), merge=True)
    return cfg


def require_same_run(cfg: DictConfig, run_dir: Path) -> None:
    """auto_resume continues only the run that the directory holds: the same config up to trainer.*."""
    saved = OmegaConf.load(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).is_file() else None
    def essence(c: DictConfig) -> dict:
        return {k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k != "trainer"}
    if saved is None or essence(saved) != essence(cfg):
        raise UserError(f"auto_resume: {run_dir} holds a run with another config; resume it with resume={run_dir} "
                        "or choose another directory")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write `payload` as JSON to `path` (its folder made if missing); readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def build(cfg: DictConfig, splits: Optional[Splits] = None) -> tuple[RunConfig, GenerativeModel, DeviceData, Any]:
    """The validated config, the model and the data on their device, and the autocast context of a run.
    `splits`: use this data instead of loading cfg.data's (the benchmark's synthetic digits)."""
    rc = validate(cfg)
    torch.manual_seed(rc.seed)
    device = resolve_device(rc.device.type, rc.device.index)
    autocast = configure_precision(rc.trainer.precision, device)
    if splits is None:
        splits = target_class(cfg.data, "data")(rc.data).load()
    data = DeviceData(splits, rc.data, rc.trainer.batch_size, rc.trainer.labelled_batch_size, device)
    model = target_class(cfg.model, "model")(rc.model, data.spec).to(device)
    return rc, model, data, autocast


def run(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Train as `cfg` says; with `cfg.resume` set, continue that run instead. Returns final metrics."""
    resume = cfg.get("resume")
    if resume is not None:
        run_dir = Path(resume)
        cfg = resumed_config(run_dir, overrides)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "resume"]) if "resume" in cfg else cfg
    if resume is None and (run_dir / CHECKPOINT).exists():
        if not cfg.get("auto_resume"):
            raise UserError(f"hydra.run.dir={run_dir} already holds a run; continue it with resume={run_dir} "
                            "(or auto_resume=true) or choose another directory")
        require_same_run(cfg, run_dir)
        resume = run_dir
    rc, model, data, autocast = build(cfg)
    device = data.x_train.device
    # Read the checkpoint before anything is written, so a corrupt one changes nothing on disk.
    state = checkpoint.load(run_dir / CHECKPOINT) if resume is not None else None

    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        OmegaConf.save(cfg, run_dir / CONFIG_FILE)
    logger = TensorBoardLogger(run_dir, rc.logger.tensorboard, purge_step=state["step"] if state else None)
    trainer = Trainer(rc, model, data, run_dir, logger, autocast)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed %s at epoch %d, step %d", run_dir, trainer.epoch, trainer.step)
    log.info("%s on %s: %d parameters, %d training examples, %d steps per epoch, run dir %s",
             type(model).__name__, device, sum(p.numel() for p in model.parameters()),
             len(data.x_train), data.steps_per_epoch, run_dir)
    try:
        metrics = trainer.fit()
        logger.hparams(flatten(cfg), {k: v for k, v in metrics.items() if k.startswith("eval/")})
    finally:
        logger.close()
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    log.info("final: %s", ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in metrics.items() if "/class_" not in k))
    return metrics
