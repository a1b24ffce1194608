"""Interrupted runs resume to the same final numbers as uninterrupted ones; corrupt checkpoints are refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from dgm_run.trainer import Trainer

# Big enough that a kill lands mid-epoch (80 batches per epoch), small enough for seconds on a CPU.
RUN = [
    "trainer.max_epochs=3",
    "trainer.checkpoint_every_steps=7",
    "trainer.eval_every_epochs=1",
    "trainer.log_every_steps=10",
    "trainer.progress_bar=false",
    "model.iw_samples=4",
    "logger.images=8",
    "device=cpu",
]
DGM_RUN = str(Path(sys.executable).with_name("dgm-run"))


def dgm_run(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([DGM_RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def hparams_status(run_dir: Path) -> tuple[dict, Optional[int]]:
    """The HParams session of a run's events: its hyper-parameters and its end status (None: no end)."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(value)
        for tag, value in events.PluginTagToContent("hparams").items()
    }
    hparams = dict(content["_hparams_/session_start_info"].session_start_info.hparams)
    end = content.get("_hparams_/session_end_info")
    return hparams, None if end is None else end.session_end_info.status


def final_metrics(run_dir: Path) -> dict:
    """Its numbers: not the evaluation's wall time, nor where it ran (the command line differs on resume)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("time/eval_s")
    metrics.pop("provenance")
    return metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = dgm_run(*RUN, f"hydra.run.dir={run_dir}")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return final_metrics(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_identical_metrics(tmp_path, reference, sig):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.pt"
    proc = dgm_run(*RUN, f"hydra.run.dir={run_dir}")
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert f"checkpoint saved. Resume with: dgm-run resume={run_dir}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    state = torch.load(ckpt, weights_only=True)
    assert 0 < state["batch_in_epoch"] < 80 and state["epoch"] == 0, "the kill should land mid-epoch"
    assert not (run_dir / "metrics.json").exists()
    # The HParams dashboard lists the run from its start, and not as finished.
    hparams, status = hparams_status(run_dir)
    assert hparams["trainer.checkpoint_every_steps"].number_value == 7 and status is None

    resumed = dgm_run(f"resume={run_dir}")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert final_metrics(run_dir) == reference
    assert hparams_status(run_dir)[1] == api_pb2.STATUS_SUCCESS  # the process that finished it says so


def test_a_signal_after_the_last_batch_stops_the_run_and_resume_finishes_it(cli, tmp_path, monkeypatch):
    """A signal during the final evaluation is acted on, not swallowed: in a sweep the next job must not start."""
    fit = Trainer.fit

    def signalled_at_the_last_epoch_end(trainer: Trainer) -> dict:
        trainer.on_epoch_end = lambda t: signal.raise_signal(signal.SIGINT)  # returns None: training goes on
        return fit(trainer)

    monkeypatch.setattr(Trainer, "fit", signalled_at_the_last_epoch_end)
    run_dir = tmp_path / "run"
    code, _, err = cli(*RUN, "trainer.max_epochs=1", "model.hidden=[32]", f"hydra.run.dir={run_dir}")
    assert code == 128 + signal.SIGINT and f"Resume with: dgm-run resume={run_dir}" in err
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(Trainer, "fit", fit)
    assert cli(f"resume={run_dir}")[0] == 0
    assert json.loads((run_dir / "metrics.json").read_text())["epoch"] == 1


def test_resume_may_extend_training(cli, tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*RUN, "trainer.max_epochs=1", "model.hidden=[32]", f"hydra.run.dir={run_dir}")[0] == 0
    assert cli(f"resume={run_dir}", "trainer.max_epochs=2")[0] == 0
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["epoch"] == 2
    # The first run's evaluation came before its last checkpoint: the resumed run keeps its events.
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for steps in ([e.step for e in events.Scalars("eval/elbo")], [e.step for e in events.Images("samples")]):
        assert steps == [final["step"] // 2, final["step"]]
    code, _, err = cli(f"resume={run_dir}", "model.z_dim=3")
    assert code == 2 and "only trainer.* keys may change when resuming (got model.z_dim=3)" in err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_is_refused_and_kept(cli, tmp_path, damage):
    run_dir = tmp_path / "run"
    assert cli(*RUN, "trainer.max_epochs=1", "model.hidden=[32]", f"hydra.run.dir={run_dir}")[0] == 0
    ckpt = run_dir / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    bad = {"truncated": good[: len(good) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[damage]
    ckpt.write_bytes(bad)
    events = sorted(p.name for p in run_dir.iterdir())
    code, _, err = cli(f"resume={run_dir}")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert f"checkpoint {ckpt} is corrupt or truncated" in err
    assert ckpt.read_bytes() == bad and sorted(p.name for p in run_dir.iterdir()) == events


def test_resume_of_a_directory_without_a_run(cli, tmp_path):
    code, _, err = cli(f"resume={tmp_path}")
    assert code == 2 and f"resume={tmp_path}: no config.yaml there" in err


def test_resubmitted_job_with_auto_resume_continues_to_identical_metrics(tmp_path, reference):
    """A pre-empted cluster job is resubmitted with the same command into the same directory."""
    run_dir = tmp_path / "run"
    command = [*RUN, f"hydra.run.dir={run_dir}", "auto_resume=true"]
    proc = dgm_run(*command)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert not (run_dir / "metrics.json").exists()

    again = dgm_run(*command)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"resumed {run_dir} at epoch 0" in out + err and final_metrics(run_dir) == reference


def test_auto_resume_refuses_a_directory_of_another_run(cli, tmp_path):
    run_dir = tmp_path / "run"
    tiny = [
        "trainer.max_steps=3",
        "model.hidden=[16]",
        "model.z_dim=4",
        "model.iw_samples=1",
        "logger=none",
        "trainer.progress_bar=false",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
        "auto_resume=true",
    ]
    assert cli(*tiny)[0] == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    code, _, err = cli(*tiny, "model.z_dim=5")
    assert code == 2 and f"auto_resume: {run_dir} holds a run with another config" in err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
