"""Sweeps: real Hydra multiruns, failing jobs, submitit's local executor, Optuna, and the results table."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import backend_context, plugin_data_pb2

from dgm_run.device import device_name
from dgm_run.run_dir import job_name
from tests.conftest import REPO

DGM_RUN = str(Path(sys.executable).with_name("dgm-run"))
# A job of a second or two on a CPU.
TINY_JOB = [
    "trainer.max_epochs=1",
    "trainer.max_steps=6",
    "trainer.log_every_steps=3",
    "model.hidden=[16]",
    "model.iw_samples=2",
    "logger.images=4",
    "logger.embedding=0",
    "trainer.progress_bar=false",
    "trainer.eval_fid_samples=200",
    "device=cpu",
]


def number(job: Path) -> str:
    """A sweep job's number, which its directory name starts (3_adgm_digits_seed=1)."""
    return job.name.split("_")[0]


def job_dir(sweep_dir: Path, num: int) -> Path:
    (found,) = sweep_dir.glob(f"{num}_*")
    return found


def sweep(sweep_dir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DGM_RUN, "-m", *TINY_JOB, *args, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results_table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "results_table.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_two_by_two_sweep_writes_one_run_per_job_and_a_table(tmp_path):
    done = sweep(tmp_path / "sweep", "model.z_dim=4,8", "seed=0,1", "data.n_validation=500")
    assert done.returncode == 0, done.stderr
    # The sweep's last lines: where it is, the table of its results, the TensorBoard command.
    assert done.stdout.strip().splitlines()[-3:] == [
        f"sweep: {tmp_path / 'sweep'} (a run directory per job)",
        f"table: dgm-run-table {tmp_path / 'sweep'}",
        f"see them: tensorboard --logdir {tmp_path / 'sweep'}",
    ]
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert [number(p.parent) for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for metrics_file in jobs:
        metrics = json.loads(metrics_file.read_text())
        assert {"eval/elbo", "valid/elbo", "eval/log_likelihood", "valid/log_likelihood"} <= set(metrics)
        events = EventAccumulator(str(metrics_file.parent), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        assert {"train/elbo/loss", "eval/elbo", "valid/elbo"} <= set(events.Tags()["scalars"])
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        seen.add((hparams["model.z_dim"].number_value, hparams["seed"].number_value))
        assert hparams["data.n_validation"].number_value == 500
    assert seen == {(4, 0), (4, 1), (8, 0), (8, 1)}  # every job logged its own config to the HParams dashboard

    table = results_table(
        str(tmp_path / "sweep"), "--metrics", "eval/elbo", "valid/elbo", "--csv", str(tmp_path / "table.csv")
    ).stdout.splitlines()
    assert table[0] == "| model.z_dim | runs | eval/elbo | valid/elbo |"
    assert [row.split("|")[1:3] for row in table[2:4]] == [[" 4 ", " 2 "], [" 8 ", " 2 "]]
    # The footnote says where the numbers came from: this checkout's commit, torch, the device.
    assert table[4].startswith("from: dgm-run ") and f"torch {torch.__version__}" in table[4], table[4:]
    assert table[4].endswith(" cpu (" + device_name(torch.device("cpu")) + "): 4 job(s)")
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    expected = {}
    for metrics_file in jobs:  # the mean over seeds, recomputed from the jobs' own metrics.json
        overrides = yaml.safe_load((metrics_file.parent / ".hydra" / "overrides.yaml").read_text())
        z_dim = next(o.split("=")[1] for o in overrides if o.startswith("model.z_dim="))
        expected.setdefault(z_dim, []).append(json.loads(metrics_file.read_text())["eval/elbo"])
    for row in rows:
        assert float(row["eval/elbo mean"]) == pytest.approx(sum(expected[row["model.z_dim"]]) / 2)


def test_runs_are_named_for_their_model_data_and_overrides(tmp_path):
    """TensorBoard names a run by its directory: each job's says its model, data and overrides, after its
    number; its HParams record holds the options chosen (model=beta_vae) beside every value."""
    done = sweep(tmp_path / "sweep", "model=vae,beta_vae", "model.z_dim=3")
    assert done.returncode == 0, done.stderr
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path / "sweep"))
    mux.Reload()
    runs = sorted(mux.Runs())
    assert [run.split(",")[0] for run in runs] == [
        "0_vae_digits_trainer.max_epochs=1",
        "1_beta_vae_digits_trainer.max_epochs=1",
    ]
    for run, model in zip(runs, ("vae", "beta_vae")):
        assert run.endswith(",model.z_dim=3") and "device" not in run  # device=cpu says where it runs, not what
        content = mux.PluginRunToTagToContent("hparams")[run]["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["model"].string_value == model and hparams["data"].string_value == "digits"
        assert hparams["model.z_dim"].number_value == 3 and hparams["model._target_"].string_value.endswith(
            "VAE" if model == "vae" else "BetaVAE"
        )
    # The dashboard's columns (TensorBoard's HParams backend): those that differ first, then by name, so the
    # option chosen comes before its values: model, then model._target_, ...
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path / "sweep"))
    backend = backend_context.Context(
        base_plugin.TBContext(logdir=str(tmp_path / "sweep"), multiplexer=mux, data_provider=provider)
    )
    request = context.RequestContext()
    experiment = backend.experiment_from_metadata(
        request,
        "",
        True,
        backend.hparams_metadata(request, ""),
        backend.hparams_from_data_provider(request, "", limit=None),
    )
    columns = [h.name for h in experiment.hparam_infos]
    assert columns[:2] == ["model", "model._target_"] and columns.index("data") < columns.index("data._target_")


def test_a_job_name_leaves_out_where_things_are_and_makes_no_folder():
    name = job_name(
        2,
        "m1m2",
        "mnist",
        [
            "model=m1m2",
            "data.root=/data",
            "model.m1_checkpoint=runs/a/last.pt",
            "seed=1",
            "hydra.launcher.n_jobs=4",
            "trainer.threads=1",
            "device=cuda",
        ],
    )
    assert name == "2_m1m2_mnist_model.m1_checkpoint=runs%2Fa%2Flast.pt,seed=1"
    assert len(job_name(7, "vae", "digits", [f"model.hidden=[{'9' * 300}]"])) == 200  # a file name's bytes at most
    assert job_name(0, "vae", "digits", []) == "0_vae_digits"


def test_results_table_pools_sweeps_by_their_resolved_settings(tmp_path):
    """The same settings, once from a config group (trainer=debug) and once as explicit overrides, land in
    one row; two sweep directories are pooled."""
    first = sweep(tmp_path / "first", "trainer=debug", "seed=0,1")
    second = sweep(
        tmp_path / "second",
        "trainer.checkpoint_every_steps=10",
        "trainer.eval_iw_samples=1",
        "model.z_dim=50,8",
        "seed=2",
    )
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    table = results_table(str(tmp_path / "first"), str(tmp_path / "second"), "--metrics", "eval/elbo").stdout
    lines = table.splitlines()
    assert lines[0] == "| model.z_dim | runs | eval/elbo |"
    assert [row.split("|")[1:3] for row in lines[2:4]] == [[" 50 ", " 3 "], [" 8 ", " 1 "]]
    pooled = [
        json.loads(job_dir(tmp_path / sweep_dir, job).joinpath("metrics.json").read_text())["eval/elbo"]
        for sweep_dir, job in (("first", 0), ("first", 1), ("second", 0))
    ]
    mean = float(lines[2].split("|")[3].split("±")[0])
    assert mean == pytest.approx(sum(pooled) / 3, rel=1e-3)


def test_a_failing_job_is_named_and_the_others_finish(tmp_path):
    done = sweep(tmp_path / "sweep", "model.hidden=[16],[-3],[8]")
    assert done.returncode == 2
    # One line when the job fails, one when the sweep ends: Hydra does not report the job again.
    job_line, last = done.stderr.strip().splitlines()
    assert (
        job_line.startswith("dgm-run: error: job 1 (")
        and " model.hidden=[-3] " in job_line
        and job_line.endswith(") failed: model.hidden: layer sizes must be positive integers (got [-3])")
    )
    assert last == (
        "dgm-run: error: 1 job(s) of the sweep failed; every job ran: job 1: model.hidden: layer sizes "
        "must be positive integers (got [-3])"
    )
    assert done.stdout.strip().splitlines()[-3] == f"sweep: {tmp_path / 'sweep'} (a run directory per job)"
    assert sorted(number(p.parent) for p in (tmp_path / "sweep").glob("*/metrics.json")) == ["0", "2"]
    table = results_table(str(tmp_path / "sweep")).stdout
    failed = job_dir(tmp_path / "sweep", 1).name
    assert f"failed: job {failed} (model.hidden=[-3]): model.hidden: layer sizes must be positive integers" in table


def test_unknown_objective_is_one_clear_line(tmp_path):
    done = subprocess.run(
        [DGM_RUN, *TINY_JOB, "objective=eval/accuracy", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dgm-run: error: objective=eval/accuracy is not a final metric of this run (see metrics.json); "
        "choose one of: eval/elbo, eval/log_likelihood, eval/fid, eval/precision, eval/recall, time/eval_s, epoch, "
        "step, steps_per_epoch"
    ]
    assert (tmp_path / "metrics.json").is_file()  # the finished run is kept


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason='submitit launcher not installed (pip install ".[slurm]")',
)
def test_submitit_local_runs_each_job_as_its_own_process(tmp_path):
    done = sweep(tmp_path / "sweep", "launcher=submitit_local", "seed=0,1")
    assert done.returncode == 0, done.stderr
    for job in (0, 1):
        metrics = json.loads((job_dir(tmp_path / "sweep", job) / "metrics.json").read_text())
        assert metrics["step"] == 6 and metrics["eval/elbo"] < 0
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran both


def test_optuna_search_of_four_trials_minimises_the_validation_error(tmp_path):
    done = sweep(
        tmp_path / "search",
        "hparams_search=adgm_optuna",
        "data=digits",
        "data.n_labels=100",
        "data.n_validation=500",
        "model.a_dim=4",
        "model.z_dim=4",
        "model.eval_samples=2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=null",
    )
    assert done.returncode == 0, done.stderr
    assert_quiet(done)
    results = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    errors = [json.loads(p.read_text())["valid/error"] for p in (tmp_path / "search").glob("*/metrics.json")]
    assert len(errors) == 4 and results["trials"] == {"COMPLETE": 4}
    assert results["best_value"] == pytest.approx(min(errors))  # the app returned valid/error to the sweeper
    # model.hidden, fixed on the command line (TINY_JOB), leaves the search space.
    assert set(results["best_params"]) == {"optimizer.lr", "model.alpha"}


def assert_quiet(done: subprocess.CompletedProcess) -> None:
    """No colour codes, nothing from the libraries the sweeper plugins import (Optuna's own lines, alembic's)."""
    output = done.stdout + done.stderr
    assert "\x1b[" not in output and "setup plugin" not in output and "A new study created" not in output, output
    assert "Error executing job" not in output, output


def test_failed_trials_of_a_search_are_one_line_each_and_the_search_goes_on(tmp_path):
    done = sweep(
        tmp_path / "search",
        "hparams_search=adgm_optuna",
        "data=digits",
        "data.n_labels=100",
        "model.alpha=-1",
        "hydra.sweeper.n_trials=3",
    )
    assert done.returncode == 2
    assert_quiet(done)
    lines = done.stderr.strip().splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [f"dgm-run: error: job {n}" for n in range(3)]
    assert all(line.endswith(") failed: model.alpha: must be >= 0 (got -1.0)") for line in lines[:3])
    assert lines[3].startswith("dgm-run: error: 3 job(s) of the sweep failed; every job ran: job 0: model.alpha")
    assert len(lines) == 4
    assert sorted(number(p.parent) for p in (tmp_path / "search").glob("*/error.txt")) == ["0", "1", "2"]
