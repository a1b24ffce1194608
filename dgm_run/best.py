"""trainer.best_metric: the checkpoint of the best evaluation (checkpoints/best.pt), and early stopping.

At every evaluation the metric is compared with the best value so far; a better one writes the trainer's
whole state to best.pt (atomically, as last.pt is written), so that best.pt holds the epoch, the step and
the metrics of its evaluation and loads as last.pt does. After trainer.early_stop_patience evaluations
in a row without a better value, training stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

from dgm_run.errors import UserError
from dgm_run.metrics import headline
from dgm_run.trainer_config import TrainerConfig

log = logging.getLogger(__name__)


def better_is_higher(metric: str, mode: str) -> bool:
    """best_mode=auto: lower is better for errors and losses, higher for the rest (log-likelihoods,
    ELBOs, accuracies, coverage)."""
    if mode != "auto":
        return mode == "max"
    name = metric.rsplit("/", 1)[-1]
    return not ("error" in name or "loss" in name)


class BestCheckpoint:
    def __init__(self, cfg: TrainerConfig, path: Path, prefixes: Iterable[str]) -> None:
        self.metric, self.patience, self.path = cfg.best_metric, cfg.early_stop_patience, path
        self.higher = better_is_higher(self.metric, cfg.best_mode) if self.metric else True
        # The best value so far, the epoch of its evaluation, and the evaluations since.
        self.value: Optional[float] = None
        self.epoch: Optional[int] = None
        self.stale = 0
        prefix = self.metric.split("/")[0] if self.metric else None
        if prefix is not None and prefix not in prefixes:  # known before training: say so now, not after an epoch
            raise UserError(
                f"trainer.best_metric={self.metric}: this run has no {prefix}/ metrics; "
                "hold out a validation set with data.n_validation=N"
            )

    def update(self, metrics: dict[str, float], epoch: int, save: Callable[[Path], None]) -> bool:
        """Compare an evaluation with the best so far, keep it if better; True when training should stop."""
        if self.metric is None:
            return False
        if self.metric not in metrics:
            raise UserError(
                f"trainer.best_metric={self.metric} is not a metric of this run; "
                f"choose one of: {', '.join(k for k in headline(metrics) if '/' in k)}"
            )
        value = metrics[self.metric]
        if self.value is None or (value > self.value if self.higher else value < self.value):
            self.value, self.epoch, self.stale = value, epoch, 0
            save(self.path)
        else:
            self.stale += 1
        if self.patience is None or self.stale < self.patience:
            return False
        log.info(
            "early stop: %s has not improved for %d evaluations (best %.4g at epoch %d, %s)",
            self.metric,
            self.stale,
            self.value,
            self.epoch,
            self.path,
        )
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch, "stale": self.stale}

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None:
        # A resume may name another metric (trainer.* may change): its best starts afresh.
        if state is not None and state["metric"] == self.metric:
            self.value, self.epoch, self.stale = state["value"], state["epoch"], state["stale"]
