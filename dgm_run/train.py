"""One run: config -> data, model, trainer -> metrics, logs and checkpoints in the run directory."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from dgm_run import checkpoint
from dgm_run.config import SECTIONS, RunConfig, complete, flatten, target_class, validate
from dgm_run.data.base import DeviceData, Splits
from dgm_run.device import configure_precision, resolve_device, use_device
from dgm_run.errors import Interrupted, UserError
from dgm_run.evaluate import Evaluator
from dgm_run.files import damaged, reading, write_json, write_text
from dgm_run.metrics import headline
from dgm_run.models.base import GenerativeModel
from dgm_run.report import provenance
from dgm_run.tensorboard import TensorBoardLogger
from dgm_run.trainer import Trainer, position

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
# Where `dgm-run evaluate=DIR` writes, inside DIR.
EVALUATION_DIR = "evaluation"
# Evaluations this long, and longer than training, get a line on how to shorten them.
SLOW_EVALUATION_S = 10.0
# The keys `dgm-run evaluate=` may change: how to evaluate, and where the data is (not what it is).
EVALUATE_MAY_CHANGE = ("trainer.*", "logger.*", "data.root", "data.test_binarize")
# Labels a semi-supervised model takes from data chosen without data.n_labels: the papers' benchmark
# (MNIST with 100 labels), 10 per class of the digits.
DEFAULT_LABELS = 100


def saved_config(run_dir: Path, command: str) -> DictConfig:
    """The config the run in `run_dir` saved, every schema default filled in; one line naming the file when it
    is missing, unreadable, truncated or corrupt. `command` (resume, evaluate, auto_resume) names the command."""
    saved = run_dir / CONFIG_FILE
    if not saved.exists() and not (run_dir / CHECKPOINT).exists():
        raise UserError(f"{command}={run_dir}: no {CONFIG_FILE} there; name the directory of a dgm-run run")
    remedy = "restore it; the run's .hydra/config.yaml holds the config it started with"
    with reading(saved, "config", remedy):
        cfg = OmegaConf.load(saved)
    # A truncated YAML file still parses, into the sections before the cut: a run saves every section.
    missing = [name for name in ("seed", *SECTIONS) if not isinstance(cfg, DictConfig) or name not in cfg]
    if missing:
        raise damaged(saved, "config", f"no {', '.join(missing)}", remedy)
    try:
        return complete(cfg)
    except UserError as err:
        raise UserError(f"config {saved}: {err}; {remedy}") from None


def resumed_config(
    run_dir: Path, overrides: Sequence[str], command: str = "resume", allowed: tuple[str, ...] = ("trainer.*",)
) -> DictConfig:
    """The saved config of `run_dir`, every schema default filled in, with the overrides applied whose keys
    match an `allowed` pattern (e.g. more epochs); `command` (resume, evaluate) names the command in errors."""
    cfg = saved_config(run_dir, command)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if not any(fnmatch(key, pattern) for pattern in (*allowed, "hydra.*")):
            raise UserError(
                f"{command}: only {', '.join(allowed)} keys may change when {command.removesuffix('e')}ing "
                f"(got {override.input_line})"
            )
        if not key.startswith("hydra."):
            OmegaConf.update(cfg, key, override.value(), merge=True)
    return cfg


def require_same_run(cfg: DictConfig, run_dir: Path) -> None:
    """auto_resume continues only the run that the directory holds: the same config up to trainer.*."""

    def essence(c: DictConfig) -> dict:  # every value, schema defaults filled in
        return {k: v for k, v in OmegaConf.to_container(complete(c), resolve=True).items() if k != "trainer"}

    if essence(saved_config(run_dir, "auto_resume")) != essence(cfg):
        raise UserError(
            f"auto_resume: {run_dir} holds a run with another config; resume it with resume={run_dir} "
            "or choose another directory"
        )


def give_labels(cfg: DictConfig) -> None:
    """A model that trains on labelled data (M2, ADGM, ...) chosen with data that has no data.n_labels (the
    default digits) takes DEFAULT_LABELS of them, with a one-line notice, so that `dgm-run model=adgm` runs
    as typed. The value goes into `cfg`, hence into the run's config.yaml and HParams."""
    if cfg.data.get("n_labels") is None and target_class(cfg.model, "model").needs_labels:
        cfg.data.n_labels = DEFAULT_LABELS
        log.warning(
            "model=%s needs labelled examples: taking data.n_labels=%d (balanced over the classes, drawn "
            "with data.split_seed); set data.n_labels=N for another number",
            cfg.model._target_.rpartition(".")[2].lower(),
            DEFAULT_LABELS,
        )


def load_pretrained(model: GenerativeModel) -> None:
    """Load the parts of `model` that it takes from other runs' checkpoints."""
    for key, (module, path) in model.pretrained().items():
        prefix = next((name + "." for name, m in model.named_children() if m is module), "")
        weights = checkpoint.load(Path(path), f"set {key} to the checkpoints/last.pt of a run that finished")["model"]
        # The checkpoint of a run of this model holds the part under its prefix beside the others';
        # that of a run of the part alone (a `vae` run for M1+M2's M1) holds only the part.
        if prefix and any(k.startswith(prefix) for k in weights):
            weights = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(weights)
        except RuntimeError as err:
            raise UserError(
                f"{key}={path} does not fit this model's {prefix.rstrip('.') or 'weights'} "
                f"({str(err).splitlines()[0]}); give the checkpoint of a run with the same sizes"
            ) from None


def prepare(cfg: DictConfig, splits: Optional[Splits] = None) -> tuple[RunConfig, GenerativeModel, DeviceData]:
    """The validated config of `cfg`, its data and its model on their device, the seed, the threads and the
    current device set as a run sets them: what training and an evaluation both start from.
    `splits`: use this data instead of loading cfg.data's (the benchmark's synthetic digits)."""
    run_config = validate(cfg)
    if run_config.trainer.threads is not None:
        torch.set_num_threads(run_config.trainer.threads)
    torch.manual_seed(run_config.seed)
    device = resolve_device(run_config.device.type, run_config.device.index)
    use_device(device)
    if splits is None:
        splits = target_class(cfg.data, "data")(run_config.data).load()
    data = DeviceData(splits, run_config.data, run_config.trainer.batch_size, device)
    model = target_class(cfg.model, "model")(run_config.model, data.spec).to(device)
    return run_config, model, data


def build(
    cfg: DictConfig,
    run_dir: Path,
    splits: Optional[Splits] = None,
    state: Optional[dict[str, Any]] = None,
    purge_step: Optional[int] = None,
) -> Trainer:
    """A ready trainer for `cfg`: validated, the data and the model on their device, its logger writing
    into `run_dir`; with `state` (a checkpoint), at the point where that run stopped.
    `splits`: use this data instead of loading cfg.data's (the benchmark's synthetic digits).
    `purge_step`: the logger hides the events run_dir holds from this step on (see `redone_from`)."""
    run_config, model, data = prepare(cfg, splits)
    load_pretrained(model)
    model.training_set(data.unbinarized, len(data.x_train))
    logger = TensorBoardLogger(run_dir, run_config.logger.tensorboard, purge_step=purge_step)
    trainer = Trainer(run_config, model, data, run_dir, logger)
    if state is not None:
        trainer.load_state_dict(state)
    return trainer


def redone_from(state: Optional[dict[str, Any]]) -> Optional[int]:
    """The first step a resumed run logs again, whose events (and later ones) the killed process wrote after
    its checkpoint: the checkpoint's step, or the step after it when that step's evaluation came before the
    checkpoint (an epoch's end, the end of training), since the resumed run does not evaluate it again."""
    if state is None:
        return None
    return state["step"] + (state.get("evaluated_step") == state["step"])


def run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: Sequence[str] = (),
    choices: Optional[dict[str, str]] = None,
    on_epoch_end: Optional[Callable[[Trainer], bool]] = None,
) -> dict[str, float]:
    """Train as `cfg` says; with `cfg.resume` set, continue that run instead. Returns final metrics.
    `choices`: the config groups' options the run was composed from (model=adgm, ...), which its HParams
    record holds first, before every value of the config. `on_epoch_end`: the trainer's hook of that name
    (a search's pruning)."""
    resume = cfg.get("resume")
    if resume is not None:
        run_dir = Path(resume)
        cfg = resumed_config(run_dir, overrides)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("resume", "evaluate")])
    if resume is None:
        give_labels(cfg)  # before auto_resume compares cfg with the run it finds
    if resume is None and (run_dir / CHECKPOINT).exists():
        if not cfg.get("auto_resume"):
            raise UserError(
                f"hydra.run.dir={run_dir} already holds a run; continue it with resume={run_dir} "
                "(or auto_resume=true) or choose another directory"
            )
        require_same_run(cfg, run_dir)
        resume = run_dir
    # Read the checkpoint before anything is written, so a corrupt one changes nothing on disk.
    state = checkpoint.load(run_dir / CHECKPOINT) if resume is not None else None
    trainer = build(cfg, run_dir, state=state, purge_step=redone_from(state))
    trainer.on_epoch_end = on_epoch_end
    if resume is None:
        run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; a script or a test calling run() may not
        full = complete(cfg)
        write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(full))
        # Written at the start, so that a run that fails or is killed is in the HParams dashboard too.
        trainer.logger.session_start(
            {
                **(choices or {}),
                **flatten(full),
                **{
                    f"provenance.{key}": value for key, value in provenance(trainer.device).items() if value is not None
                },
            }
        )
    else:
        log.info("resumed %s at epoch %d, step %d", run_dir, trainer.epoch, trainer.step)
    model, data = trainer.model, trainer.data
    log.info(
        "%s on %s: %d parameters, %d training examples, %d steps per epoch, run dir %s",
        type(model).__name__,
        trainer.device,
        sum(p.numel() for p in model.parameters()),
        len(data.x_train),
        data.steps_per_epoch,
        run_dir,
    )
    status: Optional[str] = "failure"
    try:
        metrics = trainer.fit()
        status = "success"
    except Interrupted:
        status = None  # it may be resumed: the process that ends the run says how it ended
        raise
    finally:
        trainer.logger.session_end(status)
        trainer.logger.close()
    write_json(run_dir / METRICS_FILE, {**metrics, "provenance": provenance(trainer.device)})
    log_final(metrics)
    log.info("wall time: training %.1f s, evaluation %.1f s", trainer.train_seconds, trainer.eval_seconds)
    hint = evaluation_hint(trainer.train_seconds, trainer.eval_seconds)
    if hint:
        log.info(hint)
    log_results(run_dir, trainer.logger.enabled, "checkpoints/")
    return metrics


def log_results(directory: Path, events: bool, more: str = "") -> None:
    """The last lines of a run or an evaluation, after the progress bars pushed its first lines away: where
    its results are, and the command that shows them."""
    log.info("results: %s (%s)", directory, ", ".join(filter(None, (METRICS_FILE, more, "events" if events else ""))))
    if events:
        log.info("see them: tensorboard --logdir %s", shlex.quote(str(directory)))


def evaluation_hint(train_seconds: float, eval_seconds: float) -> Optional[str]:
    """For a run whose evaluations outlasted its training (a quick run of a model with a precise
    log-likelihood estimate): how to shorten them."""
    if eval_seconds <= max(train_seconds, SLOW_EVALUATION_S):
        return None
    return (
        "the evaluations took longer than training: trainer.eval_iw_samples=N (fewer importance samples; "
        "trainer=debug sets 1) or a larger trainer.eval_every_epochs shortens them"
    )


def evaluation_paths(target: Path) -> tuple[Path, Path, Path]:
    """`evaluate=TARGET`, a run directory or one of its checkpoint files (DIR/checkpoints/best.pt): the run
    directory, the checkpoint (a directory's last.pt), and where the evaluation writes: DIR/evaluation for
    the last checkpoint, DIR/evaluation-<name> for another, so that each has its own events."""
    if target.suffix != ".pt":
        return target, target / CHECKPOINT, target / EVALUATION_DIR
    run_dir = target.absolute().parent.parent  # absolute: `best.pt` given from inside checkpoints/ too
    return run_dir, target, run_dir / (EVALUATION_DIR if target.stem == "last" else f"{EVALUATION_DIR}-{target.stem}")


def evaluate_run(target: Path, out_dir: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """`dgm-run evaluate=TARGET`: the metrics, grids, figures and embedding of a run's checkpoint (see
    `evaluation_paths`), as the run evaluated them (the same seed, so the same numbers), written into
    out_dir. trainer.* (e.g. eval_iw_samples), logger.* and where the data is and how its test set is
    binarized (data.root, data.test_binarize) may change; the run's own files are only read. Only the model,
    the data, the evaluation and its logger are built: nothing of training (optimizers, steps, the graph)."""
    run_dir, checkpoint_file, _ = evaluation_paths(target)
    cfg = resumed_config(run_dir, overrides, "evaluate", EVALUATE_MAY_CHANGE)
    state = checkpoint.load(checkpoint_file, f"restore a good copy, or evaluate another of {run_dir / 'checkpoints'}")
    run_config, model, data = prepare(cfg)
    with checkpoint.fitting(checkpoint_file, "model"):
        model.load_state_dict(state["model"])
    step = state["step"]
    # The logger hides what an earlier evaluation of this checkpoint logged at its step.
    logger = TensorBoardLogger(out_dir, run_config.logger.tensorboard, purge_step=step)
    autocast = configure_precision(run_config.trainer.precision, data.x_train.device)
    evaluator = Evaluator.for_run(run_config, model, data, logger, autocast)
    try:
        metrics = {**evaluator(step), **position(state["epoch"], step, data.steps_per_epoch)}
        evaluator.log_embedding(step)
        evaluator.animations.assemble()  # out_dir's: one frame per checkpoint evaluated there
    finally:
        logger.close()
    write_json(out_dir / METRICS_FILE, {**metrics, "provenance": provenance(data.x_train.device)})
    log_final(metrics)
    log_results(out_dir, logger.enabled)
    return metrics


def log_final(metrics: dict[str, float]) -> None:
    log.info(
        "final: %s",
        ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in headline(metrics).items()),
    )
