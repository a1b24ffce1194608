"""The one training loop: epochs of batches through the step, evaluation and checkpoints at their
times, signals. It knows no model: the step (step.py) runs the schedule, the evaluation
(evaluate.py) measures and draws, the optimizers (optim.py) decay per epoch. A checkpoint holds
everything a resume needs (weights, optimizers, the epoch's order, the RNG), so that a resumed
run ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dgm_run import checkpoint
from dgm_run.best import BestCheckpoint
from dgm_run.config import RunConfig
from dgm_run.contract import Batch, Progress
from dgm_run.data.base import DeviceData, EpochPlan
from dgm_run.device import configure_precision
from dgm_run.errors import Interrupted, UserError
from dgm_run.evaluate import Evaluator
from dgm_run.graph import use_cuda_graph
from dgm_run.metrics import headline
from dgm_run.models.base import GenerativeModel, ScheduleEntry
from dgm_run.optim import PhaseOptimizers, build_optimizer
from dgm_run.step import LossMeter, StepFunction, TrainStep
from dgm_run.tensorboard import TensorBoardLogger

log = logging.getLogger(__name__)


def position(epoch: int, step: int, steps_per_epoch: int) -> dict[str, int]:
    """Where training stands, saved beside the metrics (a curve's epoch is step / steps_per_epoch)."""
    return {"epoch": epoch, "step": step, "steps_per_epoch": steps_per_epoch}


class Trainer:
    def __init__(
        self,
        run_config: RunConfig,
        model: GenerativeModel,
        data: DeviceData,
        run_dir: Path,
        logger: TensorBoardLogger,
    ) -> None:
        self.run_config, self.settings = run_config, run_config.trainer
        self.model, self.data, self.logger = model, data, logger
        self.device = data.x_train.device
        self.checkpoint_path = run_dir / "checkpoints" / "last.pt"
        # Whether the training step is captured as a CUDA graph: decided here only; the optimizers, the
        # precision and every step this trainer builds (step_for too) follow it.
        self.cuda_graph = use_cuda_graph(self.settings.cuda_graph, self.settings.compile, self.device)
        self.autocast = configure_precision(self.settings.precision, self.device, self.cuda_graph)
        self.phase_optimizers = PhaseOptimizers(model, model.schedule, run_config.optimizer, capturable=self.cuda_graph)
        self.optimizers, self.schedulers = self.phase_optimizers.optimizers, self.phase_optimizers.schedulers
        self.progress = Progress(self.device)
        self.meter = LossMeter(list(self.optimizers), self.progress)
        self.scheduled_step = self._train_step(model, self.optimizers, model.schedule, model.simultaneous, self.meter)
        self.evaluator = Evaluator.for_run(run_config, model, data, logger, self.autocast)
        self.best = BestCheckpoint(self.settings, self.checkpoint_path.with_name("best.pt"), data.eval_sets())
        self.steps_per_epoch = data.steps_per_epoch
        self.total_steps = self.settings.max_epochs * self.steps_per_epoch
        if self.settings.max_steps is not None:
            self.total_steps = min(self.total_steps, self.settings.max_steps)
        # Progress, all saved in checkpoints.
        self.epoch = self.step = self.batch_in_epoch = 0
        self.plan: Optional[EpochPlan] = None
        self.evaluated_step = -1
        self.metrics: dict[str, float] = {}
        self._signal: Optional[int] = None
        self._clock = (time.perf_counter(), 0)
        self._checkpointed_at = time.monotonic()
        # Wall time of the training steps in this process (evaluation and epoch-end work excluded), and of
        # its evaluations.
        self.train_seconds = self.eval_seconds = 0.0
        # Called after each epoch's evaluation and before its checkpoint; returning True ends training
        # there (a script's stopping rule, e.g. scripts/time_to_accuracy.py). Its time is not training time.
        self.on_epoch_end: Optional[Callable[[Trainer], bool]] = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            **self.phase_optimizers.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "plan": None
            if self.plan is None
            else {"order": self.plan.order, "labelled_order": self.plan.labelled_order},
            "rng": checkpoint.rng_state(self.device),
            "evaluated_step": self.evaluated_step,
            "metrics": self.metrics,
            "best": self.best.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with checkpoint.fitting(self.checkpoint_path, "model or optimizers"):
            self.model.load_state_dict(state["model"])
            self.phase_optimizers.load_state_dict(state)
        self.epoch, self.step, self.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
        plan = state["plan"]
        self.plan = (
            None
            if plan is None
            else EpochPlan(
                plan["order"].to(self.device),
                None if plan["labelled_order"] is None else plan["labelled_order"].to(self.device),
            )
        )
        self.evaluated_step = state.get("evaluated_step", -1)
        self.metrics = state.get("metrics", {})
        self.best.load_state_dict(state.get("best"))
        checkpoint.set_rng_state(state["rng"], self.device)

    def save_checkpoint(self, path: Optional[Path] = None) -> None:
        """The whole state to `path` (default: last.pt)."""
        self._check_finite()  # never overwrite the last good checkpoint with a diverged model
        checkpoint.save(self.state_dict(), path or self.checkpoint_path)
        self._checkpointed_at = time.monotonic()

    def _checkpoint_due(self) -> bool:
        """trainer.checkpoint_every_minutes have passed since the last checkpoint (or the start)."""
        minutes = self.settings.checkpoint_every_minutes
        return minutes is not None and time.monotonic() - self._checkpointed_at >= 60 * minutes

    # ------------------------------------------------------------- training
    def fit(self) -> dict[str, float]:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            # Log lines go through tqdm.write while the bars are up, so that they do not break a bar's line.
            with (
                logging_redirect_tqdm(),
                tqdm(
                    total=self.total_steps,
                    initial=self.step,
                    desc="train",
                    disable=not self.settings.progress_bar,
                    dynamic_ncols=True,
                ) as bar,
            ):
                self._clock = (time.perf_counter(), self.step)
                while self.step < self.total_steps:
                    self._run_epoch(bar)
                self._check_finite()
                if self.evaluated_step != self.step:
                    self.evaluate()
                self.evaluator.log_embedding(self.step)
                self.save_checkpoint()
                self.evaluator.animations.assemble()  # a resumed run's too: its earlier frames are on disk
                if self._signal is not None:  # it came after the last batch; a resume only writes the results
                    raise Interrupted(self._signal, self.step)
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
        return self.metrics

    def _run_epoch(self, bar: tqdm) -> None:
        if self.plan is None:
            self.plan = self.data.plan_epoch()
            self.batch_in_epoch = 0
        while self.batch_in_epoch < self.steps_per_epoch and self.step < self.total_steps:
            started = time.perf_counter()
            self.train_step(self.data.batch(self.plan, self.batch_in_epoch))
            self.batch_in_epoch += 1
            self.step += 1
            bar.update()
            if self.step % self.settings.log_every_steps == 0:
                bar.set_postfix(self.log_train(), refresh=False)
            if self._signal is not None:
                self.save_checkpoint()
                raise Interrupted(self._signal, self.step)
            if self._checkpoint_due() or (
                self.settings.checkpoint_every_steps is not None
                and self.step % self.settings.checkpoint_every_steps == 0
            ):
                self.save_checkpoint()
            self.train_seconds += time.perf_counter() - started
            if self.settings.max_minutes is not None and self.train_seconds >= 60 * self.settings.max_minutes:
                log.info("trainer.max_minutes=%g reached at step %d", self.settings.max_minutes, self.step)
                self.total_steps = self.step
        if self.batch_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.plan = None
            self.phase_optimizers.end_epoch()
            evaluated = self.epoch % self.settings.eval_every_epochs == 0 or self.step >= self.total_steps
            if evaluated:
                self.evaluate()
            if self.on_epoch_end is not None and self.on_epoch_end(self):
                self.total_steps = self.step
            if evaluated or self._checkpoint_due():
                self.save_checkpoint()

    def train_step(self, batch: Batch) -> None:
        """One training step on `batch` as training runs it: one pass of the schedule's entries active in this
        epoch, each phase stepping only its own optimizer (captured as a CUDA graph when `cuda_graph`).
        The loop calls it on every batch; a script may call it to time the step."""
        self.progress.update(self.step, self.steps_per_epoch, self.total_steps)
        batch.progress = self.progress
        self.scheduled_step.for_epoch(self.epoch)(batch)

    def step_for(self, module: nn.Module, phase: str) -> StepFunction:
        """A training step of another module that has the model contract's `loss(phase, batch)` (a benchmark's
        reference implementation): one step of `phase` with an optimizer of its own over the module's
        parameters, built from optimizer.*, at this trainer's precision, torch.compile and CUDA graph. Its loss
        terms are not kept: it trains nothing of this run."""
        optimizer = build_optimizer(list(module.parameters()), self.run_config.optimizer, phase, self.cuda_graph)
        return self._train_step(module, {phase: optimizer}, [ScheduleEntry(phase)], False, None).for_epoch(0)

    def _train_step(
        self,
        module: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        schedule: list[ScheduleEntry],
        simultaneous: bool,
        meter: Optional[LossMeter],
    ) -> TrainStep:
        """The steps of `schedule` over `module`, at this trainer's precision, torch.compile and CUDA graph."""
        return TrainStep(
            module, optimizers, schedule, simultaneous, meter, self.autocast, self.settings.compile, self.cuda_graph
        )

    def _check_finite(self) -> None:
        for phase, step in self.meter.first_bad_steps().items():
            kept = (
                f"the last good checkpoint is {self.checkpoint_path}"
                if self.checkpoint_path.exists()
                else "no checkpoint had been written yet"
            )
            raise UserError(
                f"training diverged: the {phase} loss was NaN or infinite at step {step + 1}; "
                f"{kept}; try a lower optimizer.lr"
            )

    def log_train(self) -> dict[str, float]:
        """Log the mean of every term since the last call, and the throughput; one host sync."""
        self._check_finite()
        now = time.perf_counter()
        means = self.meter.read()
        scalars = {f"train/{phase}/{term}": value for phase, terms in means.items() for term, value in terms.items()}
        start, start_step = self._clock
        scalars["time/samples_per_s"] = (self.step - start_step) * self.data.samples_per_step / max(now - start, 1e-9)
        scalars.update({f"train/{phase}/lr": lr for phase, lr in self.phase_optimizers.learning_rates().items()})
        self.logger.scalars(scalars, self.step)
        self._clock = (now, self.step)
        return {phase: terms["loss"] for phase, terms in means.items()}

    @property
    def position(self) -> dict[str, int]:
        return position(self.epoch, self.step, self.steps_per_epoch)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum  # acted on at the end of the current batch

    def evaluate(self) -> dict[str, float]:
        if self.step > self._clock[1]:  # every evaluation has the training curve up to it, however short the run
            self.log_train()
        metrics = self.evaluator(self.step)
        start, start_step = self._clock  # evaluation time is not training time
        self._clock = (start + metrics["time/eval_s"], start_step)
        self.eval_seconds += metrics["time/eval_s"]
        self.metrics = {**metrics, **self.position}
        self.evaluated_step = self.step
        if self.best.update(metrics, self.epoch, self.save_checkpoint):
            self.total_steps = self.step  # early stop
        log.info(
            "epoch %d step %d: %s",
            self.epoch,
            self.step,
            ", ".join(f"{k} {v:.4g}" for k, v in headline(metrics).items()),
        )
        return metrics
