#!/usr/bin/env python3
"""Tabulate sweeps: one row per combination of the settings that differ, mean ± std over seeds.

    python scripts/results_table.py outputs/multirun/2026-11-24/10-00-00
    python scripts/results_table.py SWEEP_DIR OTHER_SWEEP_DIR --metrics eval/error valid/error --csv results.csv

A job is a directory under a SWEEP_DIR with Hydra's `.hydra/` folder. Its settings are the values of its
resolved config: the `config.yaml` the run saved (every value, schema defaults included), or Hydra's
`.hydra/config.yaml` for a job that failed before saving one. So the same settings land in the same row
however they were given (an experiment, a config group, explicit overrides), and the jobs of several
sweep directories are pooled. Rows group the jobs by the settings whose values differ between them,
except the keys in --over (default: seed), which the mean and standard deviation run over; a key that
only some jobs have, with one value among them, is implied by the keys that differ (model._target_) and
left out. The numbers come from each job's `metrics.json`; jobs that did not finish are listed under the
table with the reason their directory gives (error.txt).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

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
        return error_file.read_text().strip() if error_file.is_file() else "no metrics.json (still running or killed?)"


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
            saved = path / "config.yaml" if (path / "config.yaml").is_file() else path / ".hydra" / "config.yaml"
            settings = flatten(yaml.safe_load(saved.read_text()) or {})
            metrics_file = path / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
            name = str(path.relative_to(sweep)) if len(sweeps) == 1 else str(path)
            jobs.append(Job(path, name, settings, metrics))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    keys = dict.fromkeys(key for job in jobs for key in job.settings)
    return [key for key in keys if len({job.settings[key] for job in jobs if key in job.settings}) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(jobs: list[Job], metrics: list[str], over: list[str]) -> tuple[list[str], list[dict]]:
    """The grouping keys and one row per group: its key values, the number of runs, and per metric (mean, std)."""
    keys = [key for key in swept_keys(jobs) if key not in over]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.metrics is not None:
            groups.setdefault(tuple(job.settings.get(key, "–") for key in keys), []).append(job)
    rows = []
    for values, members in groups.items():
        row = {"keys": dict(zip(keys, values)), "runs": len(members)}
        for metric in metrics:
            found = [job.metrics[metric] for job in members if metric in job.metrics]
            row[metric] = mean_std(found) if found else None
        rows.append(row)
    return keys, rows


def default_metrics(jobs: list[Job]) -> list[str]:
    """The held-out metrics any finished job reports (per-class ones left out): jobs of different models
    report different ones, and each row shows those its jobs have."""
    reported = {m for job in jobs if job.metrics is not None for m in job.metrics}
    return sorted(m for m in reported if m.startswith(("eval/", "valid/")) and CLASS_TAG not in m)


def markdown(keys: list[str], rows: list[dict], metrics: list[str]) -> str:
    def cell(value: Optional[tuple[float, float]]) -> str:
        return "–" if value is None else f"{value[0]:.4g} ± {value[1]:.2g}"

    lines = ["| " + " | ".join([*keys, "runs", *metrics]) + " |", "|" + " --- |" * (len(keys) + 1 + len(metrics))]
    for row in rows:
        lines.append("| " + " | ".join([*row["keys"].values(), str(row["runs"]), *(cell(row[m]) for m in metrics)]) + " |")
    return "\n".join(lines)


def write_csv(path: Path, keys: list[str], rows: list[dict], metrics: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*keys, "runs", *(f"{m} {stat}" for m in metrics for stat in ("mean", "std"))])
        for row in rows:
            stats = [v for m in metrics for v in (row[m] if row[m] is not None else ("", ""))]
            writer.writerow([*row["keys"].values(), row["runs"], *stats])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep directories (hydra.sweep.dir), pooled")
    parser.add_argument("--metrics", nargs="+", help="metrics to show (default: every eval/ and valid/ metric)")
    parser.add_argument("--over", nargs="+", default=["seed"], help="keys to average over (default: seed)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = parser.parse_args()

    jobs = load_jobs(args.sweeps)
    if not jobs:
        sys.exit(f"results_table: no jobs (.hydra/) under {' '.join(map(str, args.sweeps))}")
    metrics = args.metrics or default_metrics(jobs)
    keys, rows = summarise(jobs, metrics, args.over)
    print(markdown(keys, rows, metrics))
    swept = swept_keys(jobs)
    for job in (job for job in jobs if job.metrics is None):
        named = " ".join(f"{k}={job.settings[k]}" for k in swept if k in job.settings)
        print(f"failed: job {job.name} ({named}): {job.error}")
    if args.csv:
        write_csv(args.csv, keys, rows, metrics)


if __name__ == "__main__":
    main()
