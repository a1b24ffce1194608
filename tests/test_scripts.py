"""scripts/: the reproduction script runs a real Hydra multirun over seeds and tabulates it; the
time-to-accuracy script trains until its targets and times them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_reproduce_runs_seeds_prints_the_table_and_draws_the_curves(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "reproduce.py"),
            "m2",
            "--seeds",
            "0",
            "1",
            "--sweep-dir",
            str(tmp_path),
            "--",
            "data=digits",
            "data.n_labels=100",
            "trainer.max_steps=3",
            "model.hidden=[32]",
            "model.iw_samples=1",
            "logger.images=0",
            "logger.embedding=0",
            "trainer.progress_bar=false",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.parent for p in (tmp_path / "m2").glob("*/metrics.json"))
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]  # 0_m2_mnist_100labels_seed=0,...
    table = done.stdout.strip().splitlines()[-3:]
    assert table[0].startswith("| model | seeds | test error %")
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[0] == "m2" and cells[1] == "2" and cells[4] == "11.97 ± 1.71 (Kingma et al. 2014)"
    mean, std = (float(v) for v in cells[2].split(" ± "))
    assert 0 <= mean <= 100 and std >= 0
    # The curve is the mean of the jobs' own eval/error events; the figure is written and logged.
    errors = [100 * json.loads((job / "metrics.json").read_text())["eval/error"] for job in jobs]
    curve = json.loads((tmp_path / "curves.json").read_text())["m2"]
    assert curve["unit"] == "step" and curve["x"] == [3] and curve["runs"] == [2]
    assert curve["mean"][-1] == pytest.approx(sum(errors) / 2)
    assert (tmp_path / "curves.png").stat().st_size > 0 and list((tmp_path / "summary").glob("events.*"))


def test_reproduce_sets_the_2015_pipeline_beside_the_authors_log(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "reproduce.py"),
            "adgm_2015_code",
            "--seeds",
            "0",
            "--sweep-dir",
            str(tmp_path),
            "--",
            "data=digits",
            "data.n_labels=100",
            "data.n_unlabelled_eval=300",
            "trainer.batch_size=2000",
            "trainer.max_epochs=2",
            "trainer.eval_every_epochs=1",
            "model.samples=2",
            "model.hidden=[16]",
            "model.a_dim=4",
            "model.z_dim=4",
            "model.eval_samples=2",
            "model.iw_samples=1",
            "logger.images=0",
            "logger.embedding=0",
            "trainer.progress_bar=false",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    row = [c.strip() for c in done.stdout.strip().splitlines()[-1].split("|")[1:-1]]
    assert row[0] == "adgm_2015_code" and row[3] == "2" and row[4] == "the authors' log starts at epoch 10"
    curves = json.loads((tmp_path / "curves.json").read_text())
    (job_file,) = (tmp_path / "adgm_2015_code").glob("0_*/metrics.json")  # 0_adgm_mnist_100labels_...
    job = json.loads(job_file.read_text())
    test, unlabelled = curves["adgm_2015_code"], curves["adgm_2015_code unlabelled"]
    assert test["unit"] == unlabelled["unit"] == "epoch" and test["x"] == unlabelled["x"] == [1, 2]
    assert test["mean"][-1] == pytest.approx(100 * job["eval/error"])
    assert unlabelled["mean"][-1] == pytest.approx(100 * job["eval/unlabelled_error"])
    assert (tmp_path / "curves.png").stat().st_size > 0


# trainer.eval_every_epochs=1000 is overridden by the script's --eval-every-epochs (default 1).
TINY_ADGM = [
    "data=digits",
    "data.n_labels=100",
    "model.samples=1",
    "model.hidden=[32,32]",
    "model.a_dim=4",
    "model.z_dim=4",
    "model.eval_samples=4",
    "model.iw_samples=1",
    "trainer.eval_every_epochs=1000",
    "device=cpu",
]


def time_to_accuracy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "tta.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "time_to_accuracy.py"), "--json", str(out), *args, *TINY_ADGM],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(out.read_text())


def test_time_to_accuracy_stops_at_its_last_target(tmp_path):
    done, report = time_to_accuracy(tmp_path, "--targets", "0.2", "0.3", "--max-minutes", "5")
    curve = report["curve"]
    assert [p["epoch"] for p in curve] == list(range(1, len(curve) + 1))  # measured after every epoch
    assert all(a["train_seconds"] < b["train_seconds"] for a, b in zip(curve, curve[1:]))
    first = {t: next(p for p in curve if p["accuracy"] >= t) for t in (0.2, 0.3)}  # the first point at or above
    assert report["targets"]["0.2"] == first[0.2] and report["targets"]["0.3"] == first[0.3]
    # It stopped at the measurement that reached the last target, long before 5 minutes of training.
    assert report["epochs"] == first[0.3]["epoch"] == curve[-1]["epoch"]
    assert report["train_seconds"] < 300
    assert report["device"] == "cpu" and {"device_name", "threads", "torch", "time"} <= set(report)
    # The curve is dgm-run's own evaluation: its last point is the run's final eval/accuracy.
    assert report["final"]["eval/accuracy"] == curve[-1]["accuracy"]
    assert not any("/class_" in k for k in report["final"])
    assert f"| 30 % | {first[0.3]['train_seconds']:.1f} s | {first[0.3]['epoch']} |" in done.stdout


def test_time_to_accuracy_reports_an_unreached_target(tmp_path):
    done, report = time_to_accuracy(tmp_path, "--targets", "1.0", "--max-minutes", "0.05")
    assert report["targets"]["1.0"] is None
    assert 0.05 * 60 <= report["train_seconds"] < 0.05 * 60 + 5  # stopped by the training-time budget
    assert "| 100 % | not reached in 0.05 min |" in done.stdout
