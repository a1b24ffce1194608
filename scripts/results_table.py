#!/usr/bin/env python3
"""Tabulate a sweep: one row per combination of the swept keys, mean ± std over seeds.

    python scripts/results_table.py outputs/multirun/2026-11-24/10-00-00
    python scripts/results_table.py SWEEP_DIR --metrics eval/error valid/error --csv results.csv

A job is a directory under SWEEP_DIR with Hydra's `.hydra/overrides.yaml`; its numbers come
from its `metrics.json`. The swept keys are the overrides whose values differ between jobs;
rows group the jobs by them, except the keys in --over (default: seed), which the mean and
standard deviation run over. Jobs that did not finish are listed under the table with the
reason their directory gives (error.txt).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from dgm_run.metrics import CLASS_TAG


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    metrics: Optional[dict[str, float]]  # None: the job did not finish

    @property
    def error(self) -> str:
        error_file = self.path / "error.txt"
        return error_file.read_text().strip() if error_file.is_file() else "no metrics.json (still running or killed?)"


def load_jobs(sweep: Path) -> list[Job]:
    jobs = []
    for overrides_file in sorted(sweep.glob("**/.hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        pairs = (item.split("=", 1) for item in yaml.safe_load(overrides_file.read_text()) or [])
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        jobs.append(Job(path, {key.lstrip("+~"): value for key, value in pairs}, metrics))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    keys = dict.fromkeys(key for job in jobs for key in job.overrides)
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(jobs: list[Job], metrics: list[str], over: list[str]) -> tuple[list[str], list[dict]]:
    """The grouping keys and one row per group: its key values, the number of runs, and per metric (mean, std)."""
    keys = [key for key in swept_keys(jobs) if key not in over]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.metrics is not None:
            groups.setdefault(tuple(job.overrides.get(key, "") for key in keys), []).append(job)
    rows = []
    for values, members in groups.items():
        row = {"keys": dict(zip(keys, values)), "runs": len(members)}
        for metric in metrics:
            found = [job.metrics[metric] for job in members if metric in job.metrics]
            row[metric] = mean_std(found) if found else None
        rows.append(row)
    return keys, rows


def default_metrics(jobs: list[Job]) -> list[str]:
    """The held-out metrics every finished job reports (per-class ones left out)."""
    finished = [set(job.metrics) for job in jobs if job.metrics is not None]
    common = set.intersection(*finished) if finished else set()
    return sorted(m for m in common if m.startswith(("eval/", "valid/")) and CLASS_TAG not in m)


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
    parser.add_argument("sweep", type=Path, help="the sweep directory (hydra.sweep.dir)")
    parser.add_argument("--metrics", nargs="+", help="metrics to show (default: every eval/ and valid/ metric)")
    parser.add_argument("--over", nargs="+", default=["seed"], help="keys to average over (default: seed)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = parser.parse_args()

    jobs = load_jobs(args.sweep)
    if not jobs:
        sys.exit(f"results_table: no jobs (.hydra/overrides.yaml) under {args.sweep}")
    metrics = args.metrics or default_metrics(jobs)
    keys, rows = summarise(jobs, metrics, args.over)
    print(markdown(keys, rows, metrics))
    swept = swept_keys(jobs)
    for job in (job for job in jobs if job.metrics is None):
        named = " ".join(f"{k}={job.overrides[k]}" for k in swept if k in job.overrides)
        print(f"failed: job {job.path.name} ({named}): {job.error}")
    if args.csv:
        write_csv(args.csv, keys, rows, metrics)


if __name__ == "__main__":
    main()
