"""The Optuna search (hydra/sweeper=dgm_optuna): real studies in SQLite, real Hydra multiruns in
subprocesses, interrupted by a real signal and resumed with the same command, pruned from evaluations."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.test_sweeps import DGM_RUN, TINY_JOB

SEARCH = [
    *TINY_JOB,
    "hparams_search=vae_optuna",
    "trainer.max_steps=null",
    "trainer.max_epochs=4",
    "trainer.batch_size=500",
    "data.n_validation=500",
    "trainer.eval_fid_samples=0",
    "logger=none",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.pruner.n_startup_trials=1",
    "+hydra.sweeper.sampler.n_startup_trials=10",
]


def command(sweep_dir: Path, *extra: str) -> list[str]:
    return [DGM_RUN, "-m", *SEARCH, *extra, f"hydra.sweep.dir={sweep_dir}"]


def study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="vae", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def finished(sweep_dir: Path) -> int:
    return len(list(sweep_dir.glob("*/metrics.json")))


def test_an_interrupted_search_resumes_with_the_same_command_and_prunes(tmp_path):
    search = tmp_path / "search"
    first = subprocess.Popen(command(search), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while finished(search) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=300)
    assert first.returncode != 0 and finished(search) < 4, err
    states = [t.state.name for t in study(search).trials]
    assert states.count("FAIL") <= 1  # the trial the signal stopped, if it had started

    again = subprocess.run(command(search), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    trials = study(search).trials
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4
    pruned = [t for t in done if t.state.name == "PRUNED"]
    assert pruned, [(t.state.name, t.intermediate_values) for t in trials]
    for t in pruned:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == search and run_dir.name.startswith(f"{t.number}_vae_digits_")
        assert json.loads((run_dir / "metrics.json").read_text())["epoch"] < 4  # it trained fewer epochs
        assert json.loads((run_dir / "trial.json").read_text())["state"] == "PRUNED"
        assert f"trial {t.number} pruned at epoch" in (run_dir / "dgm-run.log").read_text()
    results = yaml.safe_load((search / "optimization_results.yaml").read_text())
    best = max((t for t in done if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert results["best_trial"] == best.number and results["best_value"] == pytest.approx(best.value)
    assert results["best_run_dir"] == best.user_attrs["run_dir"]


def test_two_processes_share_one_study_with_distinct_trials(tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    optuna.create_study(study_name="vae", storage=f"sqlite:///{search / 'optuna.db'}", direction="maximize")
    procs = [
        subprocess.Popen(
            command(search, "hydra.sweeper.pruner=null"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    trials = study(search).trials
    numbers = [t.number for t in trials if t.state.name == "COMPLETE"]
    assert len(numbers) >= 4 and len(set(numbers)) == len(numbers)
    # Each trial ran in its own directory, with the parameters the study gave it.
    for t in trials:
        recorded = json.loads((Path(t.user_attrs["run_dir"]) / "trial.json").read_text())
        assert recorded["trial"] == t.number and recorded["params"] == t.params


def test_a_search_space_that_is_no_sweep_is_one_line(tmp_path):
    done = subprocess.run(
        command(tmp_path / "s", "hydra.sweeper.params={model.z_dim:5}"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("dgm-run: error: hydra.sweeper.params.model.z_dim: '5' is not a search space")
    )


def test_a_signal_while_the_study_is_told_how_a_job_ended_leaves_no_trial_running(cli, tmp_path, monkeypatch):
    """Ctrl-C after a job ended but before its trial was told (outside training): the trial is recorded as
    interrupted, not left running for ever, the command ends in one line, and the same command finishes the
    search."""
    tell = optuna.study.Study.tell

    def interrupted(*args, **kwargs):
        monkeypatch.setattr(optuna.study.Study, "tell", tell)
        signal.raise_signal(signal.SIGINT)  # no handler of dgm-run's is up here: Python's KeyboardInterrupt

    monkeypatch.setattr(optuna.study.Study, "tell", interrupted)
    sweep = tmp_path / "search"
    args = [*command(sweep)[2:], "hydra.sweeper.pruner=null"]
    try:
        code, _, err = cli("-m", *args)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C reached the caller instead of ending dgm-run in one line")
    assert code == 128 + signal.SIGINT, err
    assert err.strip().splitlines()[-1].startswith("dgm-run: stopped by SIGINT outside training;"), err
    trials = study(sweep).trials
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in trials] == [("FAIL", True)]
    assert Path(trials[0].user_attrs["run_dir"], "metrics.json").is_file()  # its job had ended
    assert cli("-m", *args)[0] == 0
    assert [t.state.name for t in study(sweep).trials] == ["FAIL", *["COMPLETE"] * 4]
