"""Wall time for ADGM on MNIST with 100 labels to reach 95 %, 98 % and 99 % test accuracy.

    python scripts/time_to_accuracy.py data.root=DIR                      # until 99 % or 60 training minutes
    python scripts/time_to_accuracy.py --max-minutes 20 --json tta.json data.root=DIR device=cuda
    python scripts/time_to_accuracy.py --experiment sdgm_mnist --targets 0.9 data.root=DIR

Trains `experiment=adgm_mnist` (the paper's settings; any further dgm-run overrides may follow)
with the trainer `dgm-run` builds, on the device the config picks, and evaluates it as dgm-run
does every `--eval-every-epochs` epochs (it sets trainer.eval_every_epochs): the test accuracy is
the run's eval/accuracy, q(y|a,x) averaged over model.eval_samples draws of a, on all 10,000
test digits. The clock is the trainer's training time: the training steps only, not the
evaluations nor the epoch-end checkpoints. It stops when the last target is reached or after
--max-minutes of training, and reports, per target, the training time, epoch and step of the
first evaluation at or above it (or that it was not reached), as a table and optionally as JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from dgm_run import report as reports
from dgm_run.composition import compose
from dgm_run.errors import UserError
from dgm_run.metrics import headline
from dgm_run.train import build


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="dgm-run overrides, e.g. data.root=DIR device=cuda")
    parser.add_argument("--experiment", default="adgm_mnist", help="the experiment config (default adgm_mnist)")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.95, 0.98, 0.99],
        help="test accuracies to time (default 0.95 0.98 0.99)",
    )
    parser.add_argument("--max-minutes", type=float, default=60.0, help="training minutes before giving up")
    parser.add_argument(
        "--eval-every-epochs",
        type=int,
        default=1,
        help="epochs between evaluations (trainer.eval_every_epochs, default 1)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.max_minutes <= 0 or args.eval_every_epochs < 1 or not all(0 < t <= 1 for t in args.targets):
        parser.error("--max-minutes must be > 0, --eval-every-epochs >= 1, --targets in (0, 1]")
    targets = sorted(args.targets)
    overrides = [
        f"experiment={args.experiment}",
        "logger=none",
        "trainer.progress_bar=false",
        f"trainer.max_minutes={args.max_minutes}",
        *args.overrides,
        f"trainer.eval_every_epochs={args.eval_every_epochs}",
    ]

    started = time.perf_counter()
    curve: list[dict[str, float]] = []
    reached: dict[float, dict[str, float]] = {}

    def measure(trainer: Any) -> bool:
        """The trainer's on_epoch_end: after an epoch's evaluation, its test accuracy on the curve; True (stop) once
        every target is reached."""
        if trainer.evaluated_step != trainer.step:
            return False
        point = {
            "train_seconds": trainer.train_seconds,
            "epoch": trainer.epoch,
            "step": trainer.step,
            "accuracy": trainer.metrics["eval/accuracy"],
            "wall_seconds": time.perf_counter() - started,
        }
        curve.append(point)
        print(
            f"epoch {point['epoch']} step {point['step']}: test accuracy {100 * point['accuracy']:.2f} % "
            f"after {point['train_seconds']:.1f} s of training",
            file=sys.stderr,
            flush=True,
        )
        for target in targets:
            if target not in reached and point["accuracy"] >= target:
                reached[target] = point
        return len(reached) == len(targets)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            trainer = build(compose(overrides), Path(tmp))
        except UserError as err:
            sys.exit(f"time_to_accuracy: error: {err}")
        if not trainer.model.needs_labels:  # the models that learn from labels classify
            sys.exit(f"time_to_accuracy: error: --experiment {args.experiment} is not a semi-supervised classifier")
        trainer.on_epoch_end = measure
        final = trainer.fit()

    report = {
        "experiment": args.experiment,
        "overrides": overrides,
        **reports.header(trainer.device),
        "max_minutes": args.max_minutes,
        "train_seconds": trainer.train_seconds,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "wall_seconds": time.perf_counter() - started,
        "targets": {str(t): reached.get(t) for t in targets},
        "curve": curve,
        "final": headline(final),
    }
    lines = [
        f"{args.experiment} on {reports.describe(report)}: {trainer.step} steps, {trainer.epoch} epochs, "
        f"{trainer.train_seconds:.0f} s of training",
        "",
        "| test accuracy | training time | epoch | step |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        point = reached.get(target)
        lines.append(
            f"| {100 * target:g} % | "
            + (
                f"{point['train_seconds']:.1f} s | {point['epoch']} | {point['step']} |"
                if point
                else f"not reached in {args.max_minutes:g} min | | |"
            )
        )
    print("\n".join(lines))
    reports.save(report, args.json)
    return report


def command() -> None:
    """The installed command: main() without handing its report to sys.exit."""
    main()


if __name__ == "__main__":
    command()
