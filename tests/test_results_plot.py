"""results_table.py --plot: a metric per epoch over a real Hydra multirun, mean ± std over seeds per row."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO

BATCH = 500
# The embedded digits hold 8,000 training digits: the epochs follow from the steps without the script's rule.
STEPS_PER_EPOCH = 8000 // BATCH
# Two epochs, an evaluation after each: a few seconds a job on a CPU.
JOB = [
    f"trainer.batch_size={BATCH}",
    "trainer.max_epochs=2",
    "trainer.eval_every_epochs=1",
    "trainer.log_every_steps=8",
    "model.hidden=[16]",
    "model.iw_samples=2",
    "logger.images=4",
    "logger.embedding=0",
    "trainer.progress_bar=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """Two rows (model.z_dim=2, 4) of two seeds each."""
    sweep = tmp_path_factory.mktemp("plot") / "sweep"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dgm-run")),
            "-m",
            *JOB,
            "model.z_dim=2,4",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return sweep


def results_table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "results_table.py"), *args], capture_output=True, text=True, timeout=120
    )


def own_curves(sweep: Path, metric: str) -> dict[str, dict[float, list[float]]]:
    """{row label: {epoch: the value of each seed}}, read here from each job's config and event file."""
    curves: dict[str, dict[float, list[float]]] = {}
    for job in sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file()):
        label = f"model.z_dim={yaml.safe_load((job / 'config.yaml').read_text())['model']['z_dim']}"
        events = EventAccumulator(str(job), size_guidance={"scalars": 0})
        events.Reload()
        for event in (
            events.Scalars(metric) if metric in events.Tags()["scalars"] else []
        ):  # a job whose events were deleted
            curves.setdefault(label, {}).setdefault(event.step / STEPS_PER_EPOCH, []).append(event.value)
    return curves


def assert_plot_matches(png: Path, expected: dict[str, dict[float, list[float]]]) -> None:
    """The PNG is an image; its JSON holds, per row, the mean and std over seeds of the jobs' own scalars."""
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
    plotted = json.loads(png.with_suffix(".json").read_text())
    assert set(plotted) == set(expected)
    for label, by_epoch in expected.items():
        assert plotted[label]["epoch"] == [1.0, 2.0] == sorted(by_epoch)
        assert plotted[label]["runs"] == len(by_epoch[1.0])
        assert plotted[label]["mean"] == pytest.approx([statistics.mean(by_epoch[e]) for e in (1.0, 2.0)])
        spread = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in (1.0, 2.0)]
        assert plotted[label]["std"] == pytest.approx(spread)


def test_plot_draws_the_mean_and_std_over_seeds_per_row_by_epoch(sweep_dir, tmp_path):
    done = results_table(str(sweep_dir), "--plot", str(tmp_path / "out.png"), "--metric", "eval/elbo")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    expected = own_curves(sweep_dir, "eval/elbo")
    assert set(expected) == {"model.z_dim=2", "model.z_dim=4"}  # the swept values, the table's rows
    assert all(len(seeds) == 2 for by_epoch in expected.values() for seeds in by_epoch.values())
    assert_plot_matches(tmp_path / "out.png", expected)
    # Without --metric: a VAE has no eval/accuracy, so its first eval/ metric, eval/elbo.
    assert results_table(str(sweep_dir), "--plot", str(tmp_path / "default.png")).returncode == 0
    assert json.loads((tmp_path / "default.json").read_text()) == json.loads((tmp_path / "out.json").read_text())


def test_a_job_without_an_event_file_is_named_and_left_out(sweep_dir, tmp_path):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    gone = next(p.parent for p in sorted(sweep.glob("*/events.out.tfevents.*")))
    for events in gone.glob("events.out.tfevents.*"):
        events.unlink()
    done = results_table(str(sweep), "--plot", str(tmp_path / "out.png"), "--metric", "eval/elbo")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"plot: job {gone.name} (seed=0 model.z_dim=2) left out: no event file with scalars"
    ]
    expected = own_curves(sweep, "eval/elbo")
    assert [len(expected[label][1.0]) for label in sorted(expected)] == [1, 2]
    assert_plot_matches(tmp_path / "out.png", expected)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "eval/elbo"], "--metric chooses what --plot draws; give --plot FILE.png too"),
        (
            ["--plot", "{tmp}/missing/out.png"],
            "--plot {tmp}/missing/out.png: cannot write it: No such file or directory",
        ),
        (
            ["--plot", "{tmp}/out.png", "--metric", "eval/accuracy"],
            "--metric eval/accuracy: no run logged it; they logged eval/elbo, eval/fid, eval/log_likelihood, "
            "eval/precision, "
            "eval/recall",
        ),
    ],
)
def test_bad_plot_options_are_one_line(sweep_dir, tmp_path, args, message):
    done = results_table(str(sweep_dir), *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"results_table: error: {message.format(tmp=tmp_path)}"]
    assert not list(tmp_path.iterdir())  # nothing half written
