"""The one training loop: runs a model's schedule of phases over device-resident batches.

It knows nothing about any particular model: it asks the model for each phase's
parameters, calls `loss(phase, batch)`, logs whatever terms come back, evaluates with
`evaluate`, `sample` and `reconstruct`, and checkpoints everything a resume needs
(weights, optimizers, the epoch's order, the RNG) so that a resumed run ends with the
same numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
import re
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from dgm_run import checkpoint
from dgm_run.config import OptimizerConfig, RunConfig
from dgm_run.data.base import Batch, DeviceData, EpochPlan
from dgm_run.device import forked_rng
from dgm_run.errors import UserError
from dgm_run.models.base import GenerativeModel
from dgm_run.tensorboard import TensorBoardLogger

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was written at the current batch."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum = signum
        self.step = step


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimizerConfig, phase: str) -> torch.optim.Optimizer:
    override = cfg.phases.get(phase)
    lr = override.lr if override and override.lr is not None else cfg.lr
    betas = tuple(override.betas if override and override.betas is not None else cfg.betas)
    weight_decay = override.weight_decay if override and override.weight_decay is not None else cfg.weight_decay
    # fused: one kernel for every parameter's update, the same algorithm (on CPU 5x faster than the loop).
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=cfg.eps, weight_decay=weight_decay, fused=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=cfg.eps, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=weight_decay, fused=True)


def step_decay(cfg: OptimizerConfig, base_lr: float) -> Callable[[int], float]:
    """Multiplier of the learning rate after `epoch` epochs: step decay floored at min_lr."""
    floor = cfg.min_lr / base_lr
    return lambda epoch: max(cfg.lr_decay ** (epoch // cfg.lr_decay_every_epochs), floor)


def check_schedule(model: GenerativeModel, cfg: RunConfig) -> None:
    name = type(model).__name__
    for i, entry in enumerate(cfg.model.schedule):
        if entry.phase not in model.phases:
            raise UserError(f"model.schedule[{i}].phase: '{entry.phase}' is not a phase of {name}; "
                            f"phases: {', '.join(model.phases)}")
    for phase in cfg.optimizer.phases:
        if phase not in model.phases:
            raise UserError(f"optimizer.phases.{phase}: not a phase of {name}; phases: {', '.join(model.phases)}")


class Trainer:
    def __init__(self, cfg: RunConfig, model: GenerativeModel, data: DeviceData, run_dir: Path,
                 logger: TensorBoardLogger, autocast: Any) -> None:
        check_schedule(model, cfg)
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.model = model
        self.data = data
        self.logger = logger
        self.autocast = autocast
        self.checkpoint_path = run_dir / "checkpoints" / "last.pt"
        self.device = data.x_train.device
        used_phases = list(dict.fromkeys(entry.phase for entry in cfg.model.schedule))
        self.optimizers = {p: build_optimizer(model.phase_parameters(p), cfg.optimizer, p) for p in used_phases}
        self.schedulers = {
            p: torch.optim.lr_scheduler.LambdaLR(opt, step_decay(cfg.optimizer, opt.param_groups[0]["lr"]))
            for p, opt in self.optimizers.items()
        }
        self.loss_fn = torch.compile(model.loss) if self.tcfg.compile else model.loss
        self.steps_per_epoch = data.steps_per_epoch
        self.total_steps = self.tcfg.max_epochs * self.steps_per_epoch
        if self.tcfg.max_steps is not None:
            self.total_steps = min(self.total_steps, self.tcfg.max_steps)
        # Progress, all saved in checkpoints.
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.plan: Optional[EpochPlan] = None
        self.evaluated_step = -1
        self.metrics: dict[str, float] = {}
        # Loss terms summed on the device between log intervals: no host sync per step.
        self._sums: dict[str, Tensor] = {}
        self._terms: dict[str, list[str]] = {}
        self._steps: dict[str, int] = {}
        # Per phase, the first step whose loss was not finite (-1: none yet), kept on the device.
        self._first_bad = {p: torch.tensor(-1, device=self.device) for p in self.optimizers}
        self._signal: Optional[int] = None
        self._clock = (time.perf_counter(), 0)
        # Wall time of the training steps in this process: evaluation and epoch-end work excluded.
        self.train_seconds = 0.0
        # Called after each epoch's evaluation and before its checkpoint; returning True ends training
        # there (a script's stopping rule, e.g. scripts/time_to_accuracy.py). Its time is not training time.
        self.on_epoch_end: Optional[Callable[["Trainer"], bool]] = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizers": {p: o.state_dict() for p, o in self.optimizers.items()},
            "schedulers": {p: s.state_dict() for p, s in self.schedulers.items()},
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "plan": None if self.plan is None else {"order": self.plan.order, "labelled_order": self.plan.labelled_order},
            "rng": rng, "evaluated_step": self.evaluated_step, "metrics": self.metrics,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            for p, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][p])
                self.schedulers[p].load_state_dict(state["schedulers"][p])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UserError(f"checkpoint {self.checkpoint_path} does not fit this run's model or optimizers "
                            f"({str(err).splitlines()[0]})") from None
        self.epoch, self.step, self.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
        plan = state["plan"]
        self.plan = None if plan is None else EpochPlan(plan["order"].to(self.device),
                                                        None if plan["labelled_order"] is None
                                                        else plan["labelled_order"].to(self.device))
        self.evaluated_step = state.get("evaluated_step", -1)
        self.metrics = state.get("metrics", {})
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save_checkpoint(self) -> None:
        self._check_finite()  # never overwrite the last good checkpoint with a diverged model
        checkpoint.save(self.state_dict(), self.checkpoint_path)

    # ------------------------------------------------------------- training
    def fit(self) -> dict[str, float]:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.tcfg.progress_bar,
                   desc="train", dynamic_ncols=True)
        try:
            self._clock = (time.perf_counter(), self.step)
            while self.step < self.total_steps:
                self._run_epoch(bar)
            self._check_finite()
            if self.evaluated_step != self.step:
                self.evaluate()
            self._log_embedding()
            self.save_checkpoint()
        finally:
            bar.close()
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
            if self.step % self.tcfg.log_every_steps == 0:
                bar.set_postfix(self.log_train(), refresh=False)
            if self._signal is not None:
                self.save_checkpoint()
                raise Interrupted(self._signal, self.step)
            if self.step % self.tcfg.checkpoint_every_steps == 0:
                self.save_checkpoint()
            self.train_seconds += time.perf_counter() - started
            if self.tcfg.max_minutes is not None and self.train_seconds >= 60 * self.tcfg.max_minutes:
                log.info("trainer.max_minutes=%g reached at step %d", self.tcfg.max_minutes, self.step)
                self.total_steps = self.step
        if self.batch_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.plan = None
            with warnings.catch_warnings():
                # The decay follows epochs, also for a phase whose schedule entry has not started yet.
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
                for scheduler in self.schedulers.values():
                    scheduler.step()
            if self.epoch % self.tcfg.eval_every_epochs == 0 or self.step >= self.total_steps:
                self.evaluate()
            if self.on_epoch_end is not None and self.on_epoch_end(self):
                self.total_steps = self.step
            self.save_checkpoint()

    def train_step(self, batch: Batch) -> None:
        """One pass of the schedule over a batch: each phase steps only its own optimizer."""
        entries = [entry for entry in self.cfg.model.schedule if entry.active(self.epoch)]
        if not self.cfg.model.simultaneous:
            for entry in entries:
                for _ in range(entry.steps):
                    self._phase_steps([entry.phase], batch)
            return
        for round_ in range(max((entry.steps for entry in entries), default=0)):
            self._phase_steps([entry.phase for entry in entries if entry.steps > round_], batch)

    def _phase_steps(self, phases: list[str], batch: Batch) -> None:
        """Gradients of every phase in `phases` at the current parameters, then one step of each.

        All gradients are cleared first, so a phase never steps on another phase's leftovers;
        by the model contract a phase's loss leaves no gradient on other phases' parameters,
        so the backward passes of several phases do not mix.
        """
        self.model.zero_grad(set_to_none=True)
        for phase in phases:
            with self.autocast:
                terms = self.loss_fn(phase, batch)
            terms["loss"].backward()
            self._accumulate(phase, terms)
        for phase in phases:
            self.optimizers[phase].step()

    def _accumulate(self, phase: str, terms: dict[str, Tensor]) -> None:
        values = torch.stack([t.detach().float() for t in terms.values()])
        if phase not in self._sums:
            self._terms[phase] = list(terms)
            self._sums[phase] = torch.zeros_like(values)
            self._steps[phase] = 0
        self._sums[phase] += values
        self._steps[phase] += 1
        bad = self._first_bad[phase]
        self._first_bad[phase] = torch.where((bad < 0) & ~torch.isfinite(values[0]), self.step, bad)

    def _check_finite(self) -> None:
        for phase, bad in self._first_bad.items():
            step = int(bad)
            if step >= 0:
                kept = f"the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path.exists() \
                    else "no checkpoint had been written yet"
                raise UserError(f"training diverged: the {phase} loss was NaN or infinite at step {step + 1}; "
                                f"{kept}; try a lower optimizer.lr")

    def log_train(self) -> dict[str, float]:
        """Log the mean of every term since the last call, and the throughput; one host sync."""
        self._check_finite()
        now = time.perf_counter()
        scalars: dict[str, float] = {}
        for phase, sums in self._sums.items():
            if self._steps[phase] == 0:
                continue  # the phase did not run in this interval
            means = (sums / self._steps[phase]).tolist()
            scalars.update({f"train/{phase}/{t}": v for t, v in zip(self._terms[phase], means)})
            sums.zero_()
            self._steps[phase] = 0
        examples = self.data.batch_size + (self.data.labelled_batch_size if self.data.labelled is not None else 0)
        start, start_step = self._clock
        scalars["time/samples_per_s"] = (self.step - start_step) * examples / max(now - start, 1e-9)
        for phase, scheduler in self.schedulers.items():
            scalars[f"train/{phase}/lr"] = scheduler.get_last_lr()[0]
        self.logger.scalars(scalars, self.step)
        self._clock = (now, self.step)
        return {phase: scalars[f"train/{phase}/loss"] for phase in self._sums if f"train/{phase}/loss" in scalars}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum  # acted on at the end of the current batch

    # ----------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test (eval/) and validation (valid/) metrics, image grids and figures. Uses its own RNG stream, seeded by the step,
        so evaluating (or not) never changes the training run, and a resumed run
        evaluates to the same numbers."""
        started = time.perf_counter()
        self.model.eval()
        with forked_rng(self.device), self.autocast:
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)
            metrics = {f"eval/{name}": float(value) for name, value in
                       self.model.evaluate_all(self.data.x_test, self.data.y_test).items()}
            for prefix, (x, y) in self.data.eval_sets().items():
                metrics.update(self.average_metrics(prefix, x, y))
            self._log_images()
            if self.logger.enabled:  # figures cost a plot each; draw them only to log them
                for tag, figure in self.model.figures(self.data.x_test, self.data.y_test).items():
                    self.logger.figure(tag, figure, self.step)
        self.model.train()
        metrics["time/eval_s"] = time.perf_counter() - started
        start, start_step = self._clock  # evaluation time is not training time
        self._clock = (start + metrics["time/eval_s"], start_step)
        self.logger.scalars(metrics, self.step)
        self.logger.flush()
        self.metrics = {**metrics, "epoch": self.epoch, "step": self.step}
        self.evaluated_step = self.step
        log.info("epoch %d step %d: %s", self.epoch, self.step,
                 ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/class_" not in k))
        return metrics

    def average_metrics(self, prefix: str, x_all: Tensor, y_all: Tensor) -> dict[str, float]:
        """The model's per-example metrics averaged over a held-out set, and per class where it asks."""
        sums: dict[str, Tensor] = {}
        k = self.data.n_classes
        for start in range(0, len(x_all), self.tcfg.eval_batch_size):
            x, y = x_all[start:start + self.tcfg.eval_batch_size], y_all[start:start + self.tcfg.eval_batch_size]
            for name, values in self.model.evaluate(x, y).items():
                sums[name] = sums.get(name, 0) + values.float().sum()
                if name in self.model.per_class_metrics:
                    per_class = torch.zeros(k, device=self.device).index_add_(0, y, values.float())
                    sums[f"{name}/per_class"] = sums.get(f"{name}/per_class", 0) + per_class
        class_counts = torch.bincount(y_all, minlength=k).clamp(min=1).cpu()
        metrics = {}
        for name, total in sums.items():
            if name.endswith("/per_class"):
                base = name.rsplit("/", 1)[0]
                for c, value in enumerate((total.cpu() / class_counts).tolist()):
                    metrics[f"{prefix}/class_{base}/{c}"] = value
            else:
                metrics[f"{prefix}/{name}"] = float(total) / len(x_all)
        return metrics

    @torch.no_grad()
    def _log_embedding(self) -> None:
        n = self.cfg.logger.embedding
        if n == 0 or not hasattr(self.model, "latent") or not self.data.is_image:
            return
        x, y = self.data.x_test[:n], self.data.y_test[:n]
        self.model.eval()
        with forked_rng(self.device):
            torch.manual_seed(self.cfg.seed)
            codes = self.model.latent(x)
        self.model.train()
        self.logger.embedding(codes, y, x, self.step)

    def _log_images(self) -> None:
        columns = self.model.grid_columns
        n = self.cfg.logger.images // columns * columns
        if n == 0 or not self.data.is_image:
            return
        samples = self.model.sample(n)
        if samples is not None:
            self.logger.images("samples", samples, self.step, nrow=columns)
        if hasattr(self.model, "analogies"):
            # One row per test digit: the digit, then its style with every label.
            analogies = self.model.analogies(self.data.x_test[:columns])
            self.logger.images("analogies", analogies, self.step, nrow=len(analogies) // columns)
        x = self.data.x_test[:n]
        recon = self.model.reconstruct(x)
        if recon is not None:
            # Rows of eight originals, each followed by a row of their reconstructions.
            rows = torch.cat([t[r:r + 8] for r in range(0, len(x), 8) for t in (x, recon)])
            self.logger.images("reconstructions", rows, self.step)
