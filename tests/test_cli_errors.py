"""Bad input ends in one clear line that names the key or file and what is allowed, exit 2."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, config_options

# (arguments, a fragment the one error line must contain)
BAD_INPUT = [
    (["model=foo"], f"model=foo is not a known option; choose one of: {config_options('model')}"),
    (["data=bar"], f"data=bar is not a known option; choose one of: {config_options('data')}"),
    (["trainer.max_epoch=5"], "unknown key 'trainer.max_epoch'; allowed keys here: max_epochs, max_steps"),
    # Every key of VAE.Config, schema defaults included (test_config checks the whole list).
    (["model.hiden=[10]"], "unknown key 'model.hiden'; allowed keys here: _target_, schedule, simultaneous, "),
    (["model.z_dim=abc"], "model.z_dim: Value 'abc' of type 'str' could not be converted to Integer"),
    (["trainer.batch_size=0"], "trainer.batch_size: must be a positive integer (got 0)"),
    (["trainer.batch_size=-5"], "trainer.batch_size: must be a positive integer (got -5)"),
    (["trainer.max_epochs=0"], "trainer.max_epochs: must be a positive integer (got 0)"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs: must be a positive integer (got -1)"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs: Value 'ten' of type 'str' could not be converted to Integer"),
    (["trainer.precision=fp8"], "trainer.precision: 'fp8' is not allowed; choose one of auto, fp32, tf32, bf16"),
    (["data.n_labels=9000"], "data.n_labels=9000 is larger than the training set (8000 examples)"),
    (["data.n_labels=15"], "data.n_labels=15 must be divisible by the number of classes (10)"),
    (["optimizer.lr=0"], "optimizer.lr: must be > 0 (got 0.0)"),
    (
        ["optimizer=sgd", "optimizer.bias_correction=false"],
        "optimizer.bias_correction: false is a variant of Adam; set optimizer.name=adam (got sgd)",
    ),
    (["data=gmm2d"], "model=vae has a Bernoulli likelihood and needs data in [0, 1]"),
    (["data=toy_onehot4", "data.n_train=0"], "data.n_train: must be a positive integer (got 0)"),
    (
        ["model=avb", "model.encoder=gaussian"],
        "model.schedule[0].phase: AVB (encoder=gaussian) has nothing to train in phase 'adversary'",
    ),
    (
        ["model=avb", "data=toy_onehot4", "optimizer.phases.adversary.lr=1e-4"],
        "optimizer.phases is empty here: add it with +optimizer.phases.adversary.lr=1e-4",
    ),
    (["model.activation=swish"], "model.activation: 'swish' is not allowed; choose one of relu, softplus"),
    (["trainer.threads=0"], "trainer.threads: must be a positive integer (got 0)"),
    (["trainer.eval_iw_samples=0"], "trainer.eval_iw_samples: must be a positive integer (got 0)"),
    (
        ["trainer.best_metric=elbo"],
        "trainer.best_metric: must name a held-out metric, eval/... or valid/... (got elbo)",
    ),
    (
        ["trainer.best_metric=valid/elbo"],
        "trainer.best_metric=valid/elbo: this run has no valid/ metrics; "
        "hold out a validation set with data.n_validation=N",
    ),
    (["trainer.best_mode=lowest"], "trainer.best_mode: 'lowest' is not allowed; choose one of auto, min, max"),
    (["trainer.early_stop_patience=3"], "trainer.early_stop_patience: needs trainer.best_metric"),
    (["evaluate=/nowhere", "resume=/nowhere"], "evaluate= and resume= exclude each other"),
]


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dgm-run: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize("args,fragment", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_value_is_one_clear_line(cli, tmp_path, args, fragment):
    code, _, err = cli(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()  # Hydra had made it, with its own files only: taken back


def test_a_bad_value_leaves_no_directory_in_outputs(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("trainer.batch_size=0", "data.n_labels=15"):  # the schema's check; the data's, once it is loaded
        code, _, err = cli(*TINY, bad)
        assert code == 2 and err.startswith("dgm-run: error: "), err
        assert not (tmp_path / "outputs").exists()
    # A directory that existed before the run is left as it was, whatever it holds.
    (tmp_path / "mine").mkdir()
    assert cli(*TINY, "trainer.batch_size=0", f"hydra.run.dir={tmp_path / 'mine'}")[0] == 2
    assert (tmp_path / "mine").is_dir()


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_a_run_directory_that_cannot_be_made_is_one_line(cli, tmp_path, multirun):
    (tmp_path / "plain").write_text("a file, not a directory")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    code, _, err = cli(*(["-m"] if multirun else []), *TINY, f"{key}={tmp_path / 'plain' / 'sub'}")
    assert_one_line_error(
        code,
        err,
        f"{key}={tmp_path / 'plain' / 'sub'}: cannot make the run directory there "
        f"({tmp_path / 'plain'} is a file, not a directory); choose a writable directory",
    )


def unwritable_directory(tmp_path) -> Path:
    """A directory nobody may write in: a read-only one for a user; for root, who may write anywhere on a
    disk, the kernel's own /sys, where no one may make a folder."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        return locked
    probe = Path("/sys") / f"dgm_run_probe_{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys")
    probe.rmdir()
    pytest.skip("/sys accepts new folders here: no directory is closed to root")


def test_a_run_directory_without_write_access_is_one_line(cli, tmp_path):
    run_dir = unwritable_directory(tmp_path) / "run"
    code, _, err = cli(*TINY, f"hydra.run.dir={run_dir}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"dgm-run: error: hydra.run.dir={run_dir}: cannot make the run directory there (")
    assert err.strip().endswith("); choose a writable directory") and not run_dir.exists()


def test_missing_data_without_download(cli, tmp_path):
    code, _, err = cli(
        *TINY,
        "data=mnist",
        f"data.root={tmp_path / 'nowhere'}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(code, err, f"data.root={tmp_path / 'nowhere'}: no MNIST in")
    assert "set data.download=true" in err


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_data_file_is_named(cli, tmp_path, damage):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    assets = __import__("dgm_run.data.digits", fromlist=["ASSETS"]).ASSETS
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(assets / f"t10k-{kind}-ubyte.gz", raw / f"{split}-{kind}-ubyte.gz")
    bad = raw / "train-images-idx3-ubyte.gz"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:50_000])
    else:
        bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\xff" * 100))
    code, _, err = cli(*TINY, "data=mnist", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, f"data file {bad} is corrupt or truncated")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_gpu(cli, tmp_path):
    code, _, err = cli(*TINY, "device=cuda", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(
        code, err, "device=cuda: no CUDA GPU is visible to PyTorch on this machine; use device=cpu or device=auto"
    )


def test_console_script_reports_the_same_line(tmp_path):
    """The installed `dgm-run` entry point, not only main(), gives the one-line error."""
    script = shutil.which("dgm-run", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "dgm-run is not installed beside this Python"
    done = subprocess.run(
        [script, "model=foo", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120
    )
    assert_one_line_error(done.returncode, done.stderr, "model=foo is not a known option")
