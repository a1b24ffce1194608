"""Evaluation: held-out metrics (also per class), sample and reconstruction grids, the model's own
images and figures, and the projector's embedding, logged to TensorBoard.

Built by the trainer, or on its own for `evaluate=DIR` (`Evaluator.for_run`). It draws from its own RNG
stream, seeded by the run's seed and the step, so that evaluating (or not) never changes the
training run and a resumed run evaluates to the same numbers. With `progress_bar`, a bar counts the
held-out examples done and names the metrics being computed: an evaluation can outlast training.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from dgm_run.animation import Animations
from dgm_run.config import LoggerConfig, RunConfig
from dgm_run.data.base import DeviceData
from dgm_run.device import forked_rng
from dgm_run.metrics import CLASS_TAG, UNLABELLED, set_metric
from dgm_run.models.base import GenerativeModel
from dgm_run.tensorboard import TensorBoardLogger

if TYPE_CHECKING:
    from dgm_run.sample_quality import SampleQuality

log = logging.getLogger(__name__)


def error_and_accuracy(probs: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Per example: 1 where the most probable label is not y (error), and its complement (accuracy)."""
    wrong = (probs.argmax(-1) != y).float()
    return {"error": wrong, "accuracy": 1.0 - wrong}


class Evaluator:
    def __init__(
        self,
        model: GenerativeModel,
        data: DeviceData,
        logger: TensorBoardLogger,
        cfg: LoggerConfig,
        seed: int,
        batch_size: int,
        autocast: Any,
        progress_bar: bool = False,
        fid_samples: int = 0,
    ) -> None:
        self.model, self.data, self.logger, self.cfg = model, data, logger, cfg
        self.seed, self.batch_size, self.autocast = seed, batch_size, autocast
        self.progress_bar = progress_bar
        self.fid_samples = fid_samples
        self.quality: Optional[SampleQuality] = None  # made at the first evaluation that measures samples
        self.device = data.x_train.device
        self.animations = Animations(logger)  # each figure's frames; joined by animations.assemble() at the end

    @classmethod
    def for_run(
        cls, run_config: RunConfig, model: GenerativeModel, data: DeviceData, logger: TensorBoardLogger, autocast: Any
    ) -> Evaluator:
        """The evaluation of a run as its config sets it (logger.*, the seed, trainer.eval_batch_size,
        eval_fid_samples, progress_bar), at the precision of `autocast`."""
        settings = run_config.trainer
        return cls(
            model,
            data,
            logger,
            run_config.logger,
            run_config.seed,
            settings.eval_batch_size,
            autocast,
            progress_bar=settings.progress_bar,
            fid_samples=settings.eval_fid_samples,
        )

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, float]:
        """Test (eval/), validation (valid/) and unlabelled (eval/unlabelled_) metrics, image grids and figures
        at `step`; the metrics, with the evaluation's wall time, are logged and returned."""
        started = time.perf_counter()
        model, data = self.model, self.data
        model.eval()
        sets = data.eval_sets()
        # Redrawn at every batch (mininterval=0): they are few, and each may take seconds.
        bar = tqdm(
            total=sum(len(x) for x, _ in sets.values()),
            desc=f"evaluate {model.label}",
            unit="ex",
            leave=False,
            dynamic_ncols=True,
            mininterval=0,
            disable=not self.progress_bar,
        )
        with bar, forked_rng(self.device), self.autocast:
            torch.manual_seed(self.seed * 1_000_003 + step)
            metrics = {
                f"eval/{name}": float(value) for name, value in model.evaluate_all(data.x_test, data.y_test).items()
            }
            for prefix, (x, y) in sets.items():
                metrics.update(self.average_metrics(prefix, x, y, bar))
            bar.set_description("evaluate: sample quality")
            metrics.update(self.sample_quality())
            bar.set_description("evaluate: image grids and figures")
            self._log_images(step)
            if self.logger.enabled:  # figures cost a plot each; draw them only to log them
                # Imported here: matplotlib is slow to import, and a run without figures never needs it.
                from dgm_run.figures import render

                for tag, picture in model.figures(data.x_test, data.y_test).items():
                    image = render(picture)
                    self.logger.image(tag, image, step)
                    self.animations.add(tag, image, step)
        model.train()
        metrics["time/eval_s"] = time.perf_counter() - started
        self.logger.scalars(metrics, step)
        self.logger.flush()
        return metrics

    def sample_quality(self) -> dict[str, float]:
        """FID, precision and recall of trainer.eval_fid_samples samples against as many test digits, for a
        model that samples MNIST-shaped images; {} for the others."""
        # Imported here: torchmetrics is slow to import, and a run without digits never needs it.
        from dgm_run.sample_quality import DIGIT_SHAPE, SampleQuality

        reference = self.data.x_test_grey[: self.fid_samples]
        if len(reference) < 2 or self.data.shape != DIGIT_SHAPE:
            return {}
        samples = self.model.sample(len(reference))
        if samples is None:
            return {}
        if self.quality is None:
            self.quality = SampleQuality(reference)
        return {f"eval/{name}": value for name, value in self.quality(samples).items()}

    @torch.no_grad()
    def held_out_metrics(self, x: Tensor, y: Tensor, prefix: str = "eval") -> dict[str, float]:
        """The metrics of the held-out examples (x, y) as every evaluation computes those of a set
        (`average_metrics`; `prefix`: the set's name), the model in evaluation mode, at the run's precision,
        drawing from a fork of the RNG; nothing is logged and nothing else is computed. What a script times."""
        self.model.eval()
        with forked_rng(self.device), self.autocast:
            metrics = self.average_metrics(prefix, x, y)
        self.model.train()
        return metrics

    def batch_metrics(self, x: Tensor, y: Tensor, classifier_only: bool = False) -> dict[str, Tensor]:
        """Per-example metrics of a held-out batch: the error and accuracy of the model's prediction, then the
        model's own unless `classifier_only`. With data.test_binarize=mean, each is the mean over fresh
        binarizations of x, and error and accuracy are those of the mean prediction."""
        draws = self.data.held_out_binarizations
        probs: Optional[Tensor] = None
        sums: dict[str, Tensor] = {}
        for _ in range(draws):
            x_drawn = self.data.binarized_held_out(x)
            predicted = self.model.predict(x_drawn)
            if predicted is not None:
                probs = predicted if probs is None else probs + predicted  # the sum's argmax is the mean's
            own = {} if classifier_only else self.model.evaluate(x_drawn, y)
            for name, values in own.items():
                sums[name] = values.float() if name not in sums else sums[name] + values.float()
        metrics = {} if probs is None else error_and_accuracy(probs, y)
        return {**metrics, **{name: total / draws for name, total in sums.items()}}

    def average_metrics(
        self, prefix: str, x_all: Tensor, y_all: Tensor, bar: Optional[tqdm] = None
    ) -> dict[str, float]:
        """The per-example metrics (`batch_metrics`) averaged over the set `prefix` of data.eval_sets(), and per
        class where the model asks; `bar` counts the examples done. The unlabelled training digits score the
        classifier only: their likelihood is not a held-out number."""
        classifier_only = prefix == UNLABELLED
        sums: dict[str, Tensor] = {}
        k = self.data.n_classes
        for start in range(0, len(x_all), self.batch_size):
            x, y = x_all[start : start + self.batch_size], y_all[start : start + self.batch_size]
            for name, values in self.batch_metrics(x, y, classifier_only).items():
                sums[name] = sums.get(name, 0) + values.sum()
                if name in self.model.per_class_metrics and not classifier_only:
                    per_class = torch.zeros(k, device=self.device).index_add_(0, y, values)
                    sums[f"{name}/per_class"] = sums.get(f"{name}/per_class", 0) + per_class
            if bar is not None:
                names = [name for name in sums if not name.endswith("/per_class")]
                bar.set_description(f"evaluate {set_metric(prefix, '')} {', '.join(names)}", refresh=False)
                bar.update(len(x))
        class_counts = torch.bincount(y_all, minlength=k).clamp(min=1).cpu()
        metrics = {}
        for name, total in sums.items():
            if name.endswith("/per_class"):
                base = name.rsplit("/", 1)[0]
                for c, value in enumerate((total.cpu() / class_counts).tolist()):
                    metrics[f"{prefix}{CLASS_TAG}{base}/{c}"] = value
            else:
                metrics[set_metric(prefix, name)] = float(total) / len(x_all)
        return metrics

    def _log_images(self, step: int) -> None:
        columns = self.model.grid_columns
        n = self.cfg.images // columns * columns
        if n == 0 or not self.data.is_image:
            return
        samples = self.model.sample(n)
        if samples is not None:
            self.logger.images("samples", samples, step, nrow=columns)
        for tag, grid in self.model.images(self.data.x_test, self.data.y_test).items():
            self.logger.images(tag, grid.images, step, nrow=grid.nrow)
        x = self.data.x_test[:n]
        recon = self.model.reconstruct(x)
        if recon is not None:
            # Rows of eight originals, each followed by a row of their reconstructions.
            rows = torch.cat([t[r : r + 8] for r in range(0, len(x), 8) for t in (x, recon)])
            self.logger.images("reconstructions", rows, step)

    @torch.no_grad()
    def log_embedding(self, step: int) -> None:
        """The latent codes of the first logger.embedding test images, for TensorBoard's projector."""
        n = self.cfg.embedding
        if n == 0 or not self.data.is_image:
            return
        x, y = self.data.x_test[:n], self.data.y_test[:n]
        self.model.eval()
        with forked_rng(self.device):
            torch.manual_seed(self.seed)
            codes = self.model.latent(x)
        self.model.train()
        if codes is not None:
            self.logger.embedding(codes, y, x, step)
