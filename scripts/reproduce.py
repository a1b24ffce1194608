#!/usr/bin/env python3
"""Reproduce the semi-supervised MNIST tables: run a paper experiment over seeds, print mean ± std
beside the paper, and draw test error per epoch against the authors' published curve.

    python scripts/reproduce.py adgm sdgm --seeds 0 1 2 -- data.root=DIR trainer.max_epochs=300
    python scripts/reproduce.py adgm --jobs 3 -- data.root=DIR device=cuda     # seeds side by side, one GPU
    python scripts/reproduce.py adgm --collect-only      # summarise a sweep that already ran
    python scripts/reproduce.py adgm_2015_code adgm_2015_code_shuffled --seeds 0 -- data.root=DIR device=cuda

Each model runs as one Hydra multirun (`dgm-run -m experiment=<model>_mnist seed=...`; the 2015 code's
pipelines as `experiment=<name>`) into SWEEP_DIR/<model>; with --jobs K through the joblib launcher, K jobs
at a time (on one GPU they share it). The table comes from the jobs' metrics.json files; the curves from
their event files (`eval/error`, and `eval/unlabelled_error` where the runs have it, at every evaluation):
SWEEP_DIR/curves.png (mean ± std over seeds per model, the authors' published ADGM log as points: its
test error with 100 draws of a, and its "valid" error, on unlabelled training digits, with one), the same
figure in SWEEP_DIR/summary's event file for TensorBoard, and the numbers in SWEEP_DIR/curves.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from dgm_run.commands.curves import bands_figure, read_scalars
from dgm_run.errors import UserError
from dgm_run.files import read_json, write_json

# Test error (%) on MNIST with 100 labels as published: mean, std.
PAPER = {
    "m2": (11.97, 1.71, "Kingma et al. 2014"),
    "m1m2": (3.33, 0.14, "Kingma et al. 2014"),
    "adgm": (0.96, 0.02, "Maaløe et al. 2016"),
    "sdgm": (1.32, 0.07, "Maaløe et al. 2016"),
}
# The authors' published training log of ADGM (ml-lab/auxiliary-deep-generative-models, output/
# id_20151209002003_ADGMSSL_.../_logging_2015-12-09-002003.log), error (%) by epoch: "test 100-samples" (the
# test digits, q(y|a,x) averaged over 100 draws of a), every 10 epochs to 200, then at some later ones,
# and "valid" (10,000 of its unlabelled training digits, one draw of a) at the same epochs.
AUTHORS_ADGM_LOG = {
    **{10: 17.27, 20: 14.75, 30: 12.69, 40: 13.99, 50: 14.60, 60: 13.25, 70: 11.86, 80: 7.92, 90: 6.63, 100: 5.44},
    **{110: 5.62, 120: 4.25, 130: 3.49, 140: 3.34, 150: 2.74, 160: 2.76, 170: 2.25, 180: 2.25, 190: 2.10, 200: 1.59},
    **{300: 1.60, 400: 1.33, 500: 1.24, 600: 1.25, 1000: 1.19},
}
AUTHORS_ADGM_LOG_VALID = {
    **{10: 16.76, 20: 14.33, 30: 12.17, 40: 13.79, 50: 14.89, 60: 13.55, 70: 12.06, 80: 8.61, 90: 7.29, 100: 5.50},
    **{110: 5.51, 120: 3.63, 130: 2.63, 140: 2.59, 150: 1.65, 160: 1.74, 170: 1.34, 180: 1.08, 190: 0.91, 200: 0.53},
    **{300: 0.12, 400: 0.03, 500: 0.02, 600: 0.02, 1000: 0.02},
}
# The pipelines of the code behind that log (configs/experiment/adgm_2015_code*.yaml), set beside the log.
LOG_PIPELINES = ("adgm_2015_code", "adgm_2015_code_shuffled")
# Whose unlabelled training digits' error is drawn beside their test error, as the log's "valid" column.
UNLABELLED_CURVES = ("adgm", *LOG_PIPELINES)


def experiment(model: str) -> str:
    return model if model in LOG_PIPELINES else f"{model}_mnist"


def collect(sweep: Path) -> list[dict]:
    """metrics.json of every finished job under `sweep`, with its directory."""
    return [
        {"dir": path.parent, **read_json(path, "metrics", "restore it, or delete the job's folder to leave it out")}
        for path in sorted(sweep.glob("*/metrics.json"))
    ]


def row(model: str, jobs: list[dict]) -> str:
    errors = [100 * job["eval/error"] for job in jobs]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    epochs = sorted({job["epoch"] for job in jobs})
    if model in LOG_PIPELINES:  # the log at the last of its epochs the runs reached
        logged = [e for e in AUTHORS_ADGM_LOG if e <= max(epochs)]
        published = (
            f"{AUTHORS_ADGM_LOG[logged[-1]]:.2f} at epoch {logged[-1]} (the authors' log)"
            if logged
            else f"the authors' log starts at epoch {min(AUTHORS_ADGM_LOG)}"
        )
    else:
        paper_mean, paper_std, source = PAPER[model]
        published = f"{paper_mean:.2f} ± {paper_std:.2f} ({source})"
    return (
        f"| {model} | {len(jobs)} | {statistics.mean(errors):.2f} ± {spread:.2f} | "
        f"{'/'.join(map(str, epochs))} | {published} |"
    )


def curve(jobs: list[dict], tag: str = "eval/error") -> dict[str, list[float]]:
    """The error (%) `tag` at every evaluation, mean and std over the jobs that logged it. x is in epochs
    (steps over the steps per epoch of a job that finished one), or in steps for shorter runs."""
    per_step: dict[int, list[float]] = {}
    for job in jobs:
        for step, error in read_scalars(job["dir"]).get(tag, {}).items():
            per_step.setdefault(step, []).append(100 * error)
    steps = sorted(per_step)
    per_epoch = next((job["steps_per_epoch"] for job in jobs if job["epoch"]), None)
    return {
        "x": [s / per_epoch if per_epoch else s for s in steps],
        "unit": "epoch" if per_epoch else "step",
        "mean": [statistics.mean(per_step[s]) for s in steps],
        "std": [statistics.stdev(per_step[s]) if len(per_step[s]) > 1 else 0.0 for s in steps],
        "runs": [len(per_step[s]) for s in steps],
    }


def draw(curves: dict[str, dict[str, list[float]]]):
    """Every curve as a band (test error; `<model> unlabelled` the unlabelled training digits'), with the
    authors' log as points where ADGM or the log's pipelines ran for epochs."""
    bands = [
        (c["x"], c["mean"], c["std"], f"{name} (dgm-run, {max(c['runs'], default=0)} seeds)")
        for name, c in curves.items()
    ]

    def authors_log(ax) -> None:
        if any(m in curves and curves[m]["unit"] == "epoch" for m in ("adgm", *LOG_PIPELINES)):
            ax.plot(list(AUTHORS_ADGM_LOG), list(AUTHORS_ADGM_LOG.values()), "ko", label="the authors' log, test")
            if any(f"{m} unlabelled" in curves for m in UNLABELLED_CURVES):
                ax.plot(
                    list(AUTHORS_ADGM_LOG_VALID),
                    list(AUTHORS_ADGM_LOG_VALID.values()),
                    "kx",
                    label="the authors' log, valid (unlabelled training digits)",
                )

    units = {c["unit"] for c in curves.values()}
    return bands_figure(
        bands, units.pop() if len(units) == 1 else "epoch or step", "error (%)", log_y=True, extra=authors_log
    )


def main() -> None:
    try:
        reproduce()
    except UserError as err:  # a job's file that cannot be read, a report that cannot be written
        print(f"reproduce: error: {err}", file=sys.stderr)
        sys.exit(2)


def reproduce() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s MODEL [MODEL ...] [--seeds S ...] [--jobs K] [-- OVERRIDES ...]",
    )
    parser.add_argument("models", nargs="+", choices=[*sorted(PAPER), *LOG_PIPELINES])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="jobs at a time (joblib launcher; default 1)")
    parser.add_argument("--sweep-dir", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("--collect-only", action="store_true", help="only summarise existing runs")
    argv = sys.argv[1:]
    # Everything after `--` is passed to every dgm-run job as overrides.
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    lines = ["| model | seeds | test error % (mean ± std) | epochs | paper |", "| --- | --- | --- | --- | --- |"]
    curves = {}
    for model in args.models:
        sweep = args.sweep_dir / model
        if not args.collect_only:
            parallel = ["launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"] if args.jobs > 1 else []
            command = [
                "dgm-run",
                "-m",
                f"experiment={experiment(model)}",
                f"seed={','.join(map(str, args.seeds))}",
                *parallel,
                f"hydra.sweep.dir={sweep}",
                *overrides,
            ]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        jobs = collect(sweep)
        if not jobs:
            sys.exit(f"reproduce: no finished runs (metrics.json) under {sweep}")
        lines.append(row(model, jobs))
        curves[model] = curve(jobs)
        unlabelled = curve(jobs, "eval/unlabelled_error")
        if model in UNLABELLED_CURVES and unlabelled["x"]:  # the log's "valid": what training learned of them
            curves[f"{model} unlabelled"] = unlabelled
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
