#!/usr/bin/env python3
"""Reproduce the semi-supervised MNIST tables: run a paper experiment over seeds, print mean ± std
beside the paper, and draw test error per epoch against the authors' published curve.

    python scripts/reproduce.py adgm sdgm --seeds 0 1 2 -- data.root=DIR trainer.max_epochs=300
    python scripts/reproduce.py adgm --jobs 3 -- data.root=DIR device=cuda     # seeds side by side, one GPU
    python scripts/reproduce.py adgm --collect-only      # summarise a sweep that already ran

Each model runs as one Hydra multirun (`dgm-run -m experiment=<model>_mnist seed=...`) into
SWEEP_DIR/<model>; with --jobs K through the joblib launcher, K jobs at a time (on one GPU they
share it). The table comes from the jobs' metrics.json files; the curves from their event files
(`eval/error` at every evaluation): SWEEP_DIR/curves.png (mean ± std over seeds per model, the
authors' published ADGM log as points), the same figure in SWEEP_DIR/summary's event file for
TensorBoard, and the numbers in SWEEP_DIR/curves.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from curves import bands_figure, read_scalars
from torch.utils.tensorboard import SummaryWriter

from dgm_run.errors import UserError
from dgm_run.files import read_json, write_json

# Test error (%) on MNIST with 100 labels as published: mean, std.
PAPER = {
    "m2": (11.97, 1.71, "Kingma et al. 2014"),
    "m1m2": (3.33, 0.14, "Kingma et al. 2014"),
    "adgm": (0.96, 0.02, "Maaløe et al. 2016"),
    "sdgm": (1.32, 0.07, "Maaløe et al. 2016"),
}
# The authors' published training log of ADGM (the Lasagne code): test error (%) by epoch.
AUTHORS_ADGM_LOG = {80: 7.9, 100: 5.4, 150: 2.7, 200: 1.6, 400: 1.3, 500: 1.2}


def collect(sweep: Path) -> list[dict]:
    """metrics.json of every finished job under `sweep`, with its directory."""
    return [{"dir": path.parent, **read_json(path, "metrics", "restore it, or delete the job's folder to leave it out")}
            for path in sorted(sweep.glob("*/metrics.json"))]


def row(model: str, jobs: list[dict]) -> str:
    errors = [100 * job["eval/error"] for job in jobs]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    epochs = sorted({job["epoch"] for job in jobs})
    paper_mean, paper_std, source = PAPER[model]
    return (f"| {model} | {len(jobs)} | {statistics.mean(errors):.2f} ± {spread:.2f} | "
            f"{'/'.join(map(str, epochs))} | {paper_mean:.2f} ± {paper_std:.2f} ({source}) |")


def curve(jobs: list[dict]) -> dict[str, list[float]]:
    """Test error (%) at every evaluation, mean and std over the jobs that logged it. x is in epochs
    (steps over the steps per epoch of a job that finished one), or in steps for shorter runs."""
    per_step: dict[int, list[float]] = {}
    for job in jobs:
        for step, error in read_scalars(job["dir"]).get("eval/error", {}).items():
            per_step.setdefault(step, []).append(100 * error)
    steps = sorted(per_step)
    per_epoch = next((job["steps_per_epoch"] for job in jobs if job["epoch"]), None)
    return {"x": [s / per_epoch if per_epoch else s for s in steps], "unit": "epoch" if per_epoch else "step",
            "mean": [statistics.mean(per_step[s]) for s in steps],
            "std": [statistics.stdev(per_step[s]) if len(per_step[s]) > 1 else 0.0 for s in steps],
            "runs": [len(per_step[s]) for s in steps]}


def draw(curves: dict[str, dict[str, list[float]]]):
    bands = [(c["x"], c["mean"], c["std"], f"{model} (dgm-run, {max(c['runs'], default=0)} seeds)")
             for model, c in curves.items()]

    def authors_log(ax) -> None:
        if "adgm" in curves and curves["adgm"]["unit"] == "epoch":
            ax.plot(list(AUTHORS_ADGM_LOG), list(AUTHORS_ADGM_LOG.values()), "ko", label="ADGM, the authors' log")
    units = {c["unit"] for c in curves.values()}
    return bands_figure(bands, units.pop() if len(units) == 1 else "epoch or step", "test error (%)", log_y=True,
                        extra=authors_log)


def main() -> None:
    try:
        reproduce()
    except UserError as err:  # a job's file that cannot be read, a report that cannot be written
        print(f"reproduce: error: {err}", file=sys.stderr)
        sys.exit(2)


def reproduce() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s MODEL [MODEL ...] [--seeds S ...] [--jobs K] [-- OVERRIDES ...]")
    parser.add_argument("models", nargs="+", choices=sorted(PAPER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="jobs at a time (joblib launcher; default 1)")
    parser.add_argument("--sweep-dir", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("--collect-only", action="store_true", help="only summarise existing runs")
    argv = sys.argv[1:]
    # Everything after `--` is passed to every dgm-run job as overrides.
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    lines = ["| model | seeds | test error % (mean ± std) | epochs | paper |", "| --- | --- | --- | --- | --- |"]
    curves = {}
    for model in args.models:
        sweep = args.sweep_dir / model
        if not args.collect_only:
            parallel = ["launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"] if args.jobs > 1 else []
            command = ["dgm-run", "-m", f"experiment={model}_mnist", f"seed={','.join(map(str, args.seeds))}",
                       *parallel, f"hydra.sweep.dir={sweep}", *overrides]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        jobs = collect(sweep)
        if not jobs:
            sys.exit(f"reproduce: no finished runs (metrics.json) under {sweep}")
        lines.append(row(model, jobs))
        curves[model] = curve(jobs)
    print("\n".join(lines))
    write_json(args.sweep_dir / "curves.json", curves)
    if any(c["x"] for c in curves.values()):  # runs with logger=none leave no event files
        figure = draw(curves)
        figure.savefig(args.sweep_dir / "curves.png")
        with SummaryWriter(str(args.sweep_dir / "summary")) as writer:
            writer.add_figure("test_error", figure, close=True)
        print(f"curves: {args.sweep_dir / 'curves.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
