#!/usr/bin/env python3
"""Tabulate sweeps: one row per combination of the settings that differ, mean ± std over seeds.

    python scripts/results_table.py outputs/multirun/2026-11-24/10-00-00
    python scripts/results_table.py SWEEP_DIR OTHER_SWEEP_DIR --metrics eval/error valid/error --csv results.csv
    python scripts/results_table.py SWEEP_DIR --plot curves.png --metric eval/accuracy

A job is a directory under a SWEEP_DIR with Hydra's `.hydra/` folder. Its settings are the values of its
resolved config: the `config.yaml` the run saved (every value, schema defaults included), or Hydra's
`.hydra/config.yaml` for a job that failed before saving one. So the same settings land in the same row
however they were given (an experiment, a config group, explicit overrides), and the jobs of several
sweep directories are pooled. Rows group the jobs by the settings whose values differ between them,
except the keys in --over (default: seed), which the mean and standard deviation run over; a key that
only some jobs have, with one value among them, is implied by the keys that differ (model._target_) and
left out. The numbers come from each job's `metrics.json`; jobs that did not finish are listed under the
table with the reason their directory gives (error.txt).

--plot FILE.png draws one scalar (--metric) per epoch, a line per row of the table with a mean ± std band
over its runs, read from each run's event file at the steps it logged it, and writes the plotted numbers
to FILE.json. A point's epoch is its step over the run's steps per epoch (`steps_per_epoch` in its
metrics.json), a fraction for a run cut inside an epoch. A row's line keeps the epochs that every one of its
runs logged; runs without an event file or the scalar are named on stderr and left out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional

from dgm_run.errors import UserError
from dgm_run.files import read_json, read_yaml, reading, write_json, write_text
from dgm_run.metrics import CLASS_TAG


@dataclass
class Job:
    path: Path
    # How messages name the job: its directory within its sweep (with the sweep, when several are pooled).
    name: str
    settings: dict[str, str]
    metrics: Optional[dict[str, float]]  # None: the job did not finish

    @property
    def error(self) -> str:
        error_file = self.path / "error.txt"
        if not error_file.exists():
            return "no metrics.json (still running or killed?)"
        with reading(error_file, "error file", "delete it: the job is then listed as unfinished"):
            return error_file.read_text().strip()


def text(value: Any) -> str:
    """A config value as YAML writes it: true, null, [500, 500]."""
    return value if isinstance(value, str) else json.dumps(value)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """{"model.z_dim": "50", ...}: every leaf of a config, lists as one value."""
    if not isinstance(node, dict):
        return {prefix[:-1]: text(node)}
    return {key: value for k, v in node.items() for key, value in flatten(v, f"{prefix}{k}.").items()}


def load_jobs(sweeps: list[Path]) -> list[Job]:
    jobs = []
    for sweep in sweeps:
        paths = sorted(hydra_dir.parent for hydra_dir in sweep.glob("**/.hydra"))
        # A folder inside a job's own (`dgm-run evaluate=JOB` writes JOB/evaluation/) is not a job.
        for path in (p for p in paths if not any(parent in paths for parent in p.parents)):
            saved = path / "config.yaml" if (path / "config.yaml").exists() else path / ".hydra" / "config.yaml"
            settings = flatten(
                read_yaml(saved, "config", f"restore it, or move the job's folder {path} out of the sweep") or {}
            )
            metrics_file = path / "metrics.json"  # none: the job did not finish
            metrics = (
                read_json(metrics_file, "metrics", "restore it, or delete it: the job is then listed as unfinished")
                if metrics_file.exists()
                else None
            )
            name = str(path.relative_to(sweep)) if len(sweeps) == 1 else str(path)
            jobs.append(Job(path, name, settings, metrics))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    keys = dict.fromkeys(key for job in jobs for key in job.settings)
    return [key for key in keys if len({job.settings[key] for job in jobs if key in job.settings}) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group(jobs: list[Job], swept: list[str], over: list[str]) -> tuple[list[str], dict[tuple, list[Job]]]:
    """The grouping keys (the settings that differ, `swept`, but those in `over`) and the finished jobs of
    each combination of their values: the rows of the table and the lines of the plot."""
    keys = [key for key in swept if key not in over]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.metrics is not None:
            groups.setdefault(tuple(job.settings.get(key, "–") for key in keys), []).append(job)
    return keys, groups


def summarise(keys: list[str], groups: dict[tuple, list[Job]], metrics: list[str]) -> list[dict]:
    """One row per group (see `group`): its key values, the number of runs, and per metric (mean, std)."""
    rows = []
    for values, members in groups.items():
        row = {"keys": dict(zip(keys, values)), "runs": len(members)}
        for metric in metrics:
            found = [job.metrics[metric] for job in members if metric in job.metrics]
            row[metric] = mean_std(found) if found else None
        rows.append(row)
    return rows


def default_metrics(jobs: list[Job]) -> list[str]:
    """The held-out metrics any finished job reports (per-class ones left out): jobs of different models
    report different ones, and each row shows those its jobs have."""
    reported = {m for job in jobs if job.metrics is not None for m in job.metrics}
    return sorted(m for m in reported if m.startswith(("eval/", "valid/")) and CLASS_TAG not in m)


def describe(job: Job, swept: list[str]) -> str:
    """How a message names a job: its directory and its values of the settings that differ."""
    return f"job {job.name} ({' '.join(f'{k}={job.settings[k]}' for k in swept if k in job.settings)})"


def fail(message: str) -> NoReturn:
    print(f"results_table: error: {message}", file=sys.stderr)
    sys.exit(2)


def default_curve_metric(jobs: list[Job]) -> str:
    """eval/accuracy where runs report it (the semi-supervised models), else their first eval/ metric."""
    held_out = [m for m in default_metrics(jobs) if m.startswith("eval/")]
    if not held_out:
        fail("--metric: no finished job reports an eval/ metric; name the scalar to plot")
    return "eval/accuracy" if "eval/accuracy" in held_out else held_out[0]


def epoch_series(job: Job, scalars: dict[str, dict[int, float]], metric: str) -> dict[float, float] | str:
    """A finished job's `metric` by epoch (step / steps_per_epoch of its metrics.json), or why it has none."""
    if not scalars:
        return "no event file with scalars"
    if metric not in scalars:
        return f"no {metric} scalar in its event file"
    steps_per_epoch = job.metrics.get("steps_per_epoch")
    if steps_per_epoch is None:
        return "its metrics.json has no steps_per_epoch (a run of an older dgm-run)"
    return {step / steps_per_epoch: value for step, value in sorted(scalars[metric].items())}


def curve(series: list[dict[float, float]]) -> dict:
    """Mean and std over the runs at each epoch every one of them evaluated."""
    shared = sorted(set.intersection(*(set(s) for s in series)))
    stats = [mean_std([s[epoch] for s in series]) for epoch in shared]
    return {"epoch": shared, "mean": [m for m, _ in stats], "std": [s for _, s in stats], "runs": len(series)}


def row_curve(
    label: str, members: list[Job], scalars: dict[Path, dict], metric: str, swept: list[str]
) -> Optional[dict]:
    """The curve of one row of the table over the runs that have one; names on stderr what it leaves out."""
    series = []
    for job in members:
        found = epoch_series(job, scalars[job.path], metric)
        if isinstance(found, str):
            print(f"plot: {describe(job, swept)} left out: {found}", file=sys.stderr)
        else:
            series.append(found)
    if not series:
        return None
    drawn = curve(series)
    unshared = len(set().union(*series)) - len(drawn["epoch"])
    if unshared:
        print(
            f"plot: {label}: {unshared} evaluated epoch(s) not shared by its {len(series)} runs left out",
            file=sys.stderr,
        )
    return drawn


def plot(path: Path, metric: str, keys: list[str], groups: dict[tuple, list[Job]], swept: list[str]) -> None:
    """Draw `metric` per epoch, one band per row of the table, to `path`; the numbers to path.json."""
    from dgm_run.commands.curves import (
        draw,
        read_scalars,
    )  # TensorBoard and matplotlib: a second to import, so only here

    scalars = {job.path: read_scalars(job.path) for members in groups.values() for job in members}
    if not any(metric in logged for logged in scalars.values()):
        tags = sorted({tag for logged in scalars.values() for tag in logged if tag.startswith(("eval/", "valid/"))})
        fail(f"--metric {metric}: no run logged it; they logged {', '.join(tags) or 'no scalars'}")
    curves = {}
    for values, members in groups.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"
        drawn = row_curve(label, members, scalars, metric, swept)
        if drawn is not None:
            curves[label] = drawn
    if not curves:
        fail(f"--plot: no run has a {metric} curve (see the lines above)")
    try:
        draw(curves, metric, path)  # first: a path matplotlib refuses leaves no JSON behind either
    except (OSError, ValueError) as err:  # ValueError: matplotlib knows no such image format
        fail(f"--plot {path}: cannot write it: {getattr(err, 'strerror', None) or err}")
    write_json(path.with_suffix(".json"), curves)


def markdown(keys: list[str], rows: list[dict], metrics: list[str]) -> str:
    def cell(value: Optional[tuple[float, float]]) -> str:
        return "–" if value is None else f"{value[0]:.4g} ± {value[1]:.2g}"

    lines = ["| " + " | ".join([*keys, "runs", *metrics]) + " |", "|" + " --- |" * (len(keys) + 1 + len(metrics))]
    for row in rows:
        lines.append(
            "| " + " | ".join([*row["keys"].values(), str(row["runs"]), *(cell(row[m]) for m in metrics)]) + " |"
        )
    return "\n".join(lines)


def write_csv(path: Path, keys: list[str], rows: list[dict], metrics: list[str]) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow([*keys, "runs", *(f"{m} {stat}" for m in metrics for stat in ("mean", "std"))])
    for row in rows:
        stats = [v for m in metrics for v in (row[m] if row[m] is not None else ("", ""))]
        writer.writerow([*row["keys"].values(), row["runs"], *stats])
    write_text(path, table.getvalue())


def provenance_notes(jobs: list[Job]) -> list[str]:
    """Footnotes: each distinct origin of the finished jobs' numbers (dgm-run's version and commit, a dirty
    tree, torch, CUDA, the device) and how many jobs it produced."""
    origins: dict[str, int] = {}
    for job in jobs:
        where = (job.metrics or {}).get("provenance")
        if where:
            commit = f" {where['commit'][:10]}{' (dirty)' if where.get('dirty') else ''}" if where.get("commit") else ""
            cuda = f", CUDA {where['cuda']}" if where.get("cuda") else ""
            line = (
                f"dgm-run {where['dgm_run']}{commit}, torch {where['torch']}{cuda}, "
                f"{where['device']} ({where['device_name']})"
            )
            origins[line] = origins.get(line, 0) + 1
    return [f"from: {line}: {count} job(s)" for line, count in origins.items()]


def main() -> None:
    try:
        tabulate()
    except UserError as err:  # a job's file that cannot be read, an output that cannot be written
        fail(str(err))


def tabulate() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep directories (hydra.sweep.dir), pooled")
    parser.add_argument("--metrics", nargs="+", help="metrics to show (default: every eval/ and valid/ metric)")
    parser.add_argument("--over", nargs="+", default=["seed"], help="keys to average over (default: seed)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw --metric per epoch, mean ± std per row, here (the numbers in FILE.json)",
    )
    parser.add_argument(
        "--metric", help="the scalar --plot draws (default: eval/accuracy, else the first eval/ metric)"
    )
    args = parser.parse_args()
    if args.metric and not args.plot:
        fail("--metric chooses what --plot draws; give --plot FILE.png too")

    jobs = load_jobs(args.sweeps)
    if not jobs:
        sys.exit(f"results_table: no jobs (.hydra/) under {' '.join(map(str, args.sweeps))}")
    metrics = args.metrics or default_metrics(jobs)
    swept = swept_keys(jobs)
    keys, groups = group(jobs, swept, args.over)
    rows = summarise(keys, groups, metrics)
    print(markdown(keys, rows, metrics))
    for job in (job for job in jobs if job.metrics is None):
        print(f"failed: {describe(job, swept)}: {job.error}")
    for line in provenance_notes(jobs):
        print(line)
    if args.csv:
        write_csv(args.csv, keys, rows, metrics)
    if args.plot:
        plot(args.plot, args.metric or default_curve_metric(jobs), keys, groups, swept)


if __name__ == "__main__":
    main()
