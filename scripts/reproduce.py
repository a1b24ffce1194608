#!/usr/bin/env python3
"""Reproduce the semi-supervised MNIST tables: run a paper experiment over seeds, print mean ± std.

    python scripts/reproduce.py adgm sdgm --seeds 0 1 2 -- data.root=DIR trainer.max_epochs=100
    python scripts/reproduce.py adgm --collect-only      # summarise a sweep that already ran

Each model runs as one Hydra multirun (`dgm-run -m experiment=<model>_mnist seed=...`) into
SWEEP_DIR/<model>; the table is read from the jobs' metrics.json files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# Test error (%) on MNIST with 100 labels as published: mean, std.
PAPER = {
    "m2": (11.97, 1.71, "Kingma et al. 2014"),
    "m1m2": (3.33, 0.14, "Kingma et al. 2014"),
    "adgm": (0.96, 0.02, "Maaløe et al. 2016"),
    "sdgm": (1.32, 0.07, "Maaløe et al. 2016"),
}


def collect(sweep: Path) -> list[dict]:
    """metrics.json of every finished job under `sweep`, with its seed."""
    jobs = []
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        config = (metrics_file.parent / "config.yaml").read_text()
        seed = next(int(line.split(":")[1]) for line in config.splitlines() if line.startswith("seed:"))
        jobs.append({"seed": seed, **metrics})
    return jobs


def row(model: str, jobs: list[dict]) -> str:
    errors = [100 * job["eval/error"] for job in jobs]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    epochs = sorted({job["epoch"] for job in jobs})
    paper_mean, paper_std, source = PAPER[model]
    return (f"| {model} | {len(jobs)} | {statistics.mean(errors):.2f} ± {spread:.2f} | "
            f"{'/'.join(map(str, epochs))} | {paper_mean:.2f} ± {paper_std:.2f} ({source}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s MODEL [MODEL ...] [--seeds S ...] [-- OVERRIDES ...]")
    parser.add_argument("models", nargs="+", choices=sorted(PAPER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep-dir", type=Path, default=Path("outputs/reproduce"))
    parser.add_argument("--collect-only", action="store_true", help="only summarise existing runs")
    argv = sys.argv[1:]
    # Everything after `--` is passed to every dgm-run job as overrides.
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    lines = ["| model | seeds | test error % (mean ± std) | epochs | paper |", "| --- | --- | --- | --- | --- |"]
    for model in args.models:
        sweep = args.sweep_dir / model
        if not args.collect_only:
            command = ["dgm-run", "-m", f"experiment={model}_mnist", f"seed={','.join(map(str, args.seeds))}",
                       f"hydra.sweep.dir={sweep}", *overrides]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        jobs = collect(sweep)
        if not jobs:
            sys.exit(f"reproduce: no finished runs (metrics.json) under {sweep}")
        lines.append(row(model, jobs))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
