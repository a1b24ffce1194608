"""End-to-end runs: the run directory, metrics.json, and TensorBoard events read back with TensorBoard's reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, plugin_data_pb2

from dgm_run.cli import experiment_notice
from dgm_run.errors import UserError
from dgm_run.train import build, evaluation_hint, run
from tests.conftest import TINY, compose_cfg


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_default_command_trains_and_logs_everything(cli, tmp_path, monkeypatch):
    """`dgm-run` as the README runs it (defaults: VAE on the embedded digits), shortened to two epochs."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("trainer.max_epochs=2", "trainer.eval_every_epochs=1", "trainer.progress_bar=false")
    assert code == 0, err
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))
    assert run_dir.name.endswith("_vae_digits")  # outputs/DATE/TIME_MODEL_DATA
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["step"] == 160
    # A VAE that learned anything is far better than the 784 * log 2 = 543 nats of a uniform model.
    assert -250 < metrics["eval/elbo"] < -100
    assert metrics["eval/log_likelihood"] > metrics["eval/elbo"]

    events = read_events(run_dir)
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/elbo/loss",
        "train/elbo/recon",
        "train/elbo/kl_z",
        "train/elbo/lr",
        "time/samples_per_s",
        "eval/elbo",
        "eval/log_likelihood",
    } <= scalars
    losses = events.Scalars("train/elbo/loss")
    # Every log_every_steps=50 steps, and at each evaluation (epochs end at steps 80 and 160).
    assert [e.step for e in losses] == [50, 80, 100, 150, 160] and losses[-1].value < losses[0].value
    assert [e.step for e in events.Scalars("eval/elbo")] == [80, 160]
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    image = events.Images("samples")[-1]
    assert image.width > 8 * 28 and image.height > 8 * 28  # an 8 x 8 grid of digits

    session = hparams_session(events)
    assert session.start.hparams["model.z_dim"].number_value == 50
    assert session.start.hparams["data._target_"].string_value == "dgm_run.data.digits.Digits"
    assert (
        session.start.hparams["data"].string_value == "digits" and session.start.hparams["model"].string_value == "vae"
    )
    assert session.end.status == api_pb2.STATUS_SUCCESS
    # No run declares the experiment: the HParams plugin lists every run's scalars as metrics (see below).
    assert "_hparams_/experiment" not in events.PluginTagToContent("hparams")

    # The projector: the mean of q(z|x) of 1,000 test digits (logger.embedding), with their labels.
    assert (run_dir / "projector_config.pbtxt").is_file()
    (tensors,) = run_dir.glob("*/latent/tensors.tsv")
    codes = torch.tensor([[float(v) for v in line.split("\t")] for line in tensors.read_text().splitlines()])
    assert codes.shape == (1000, 50)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    trainer = build(
        compose_cfg("trainer.progress_bar=false", "device=cpu", "logger=none"), tmp_path / "rebuilt", state=state
    )
    assert torch.allclose(codes, trainer.model.encode(trainer.data.x_test[:1000])[0], atol=1e-4)


class Session:
    def __init__(self, start, end) -> None:
        self.start, self.end = start, end


def hparams_session(events: EventAccumulator) -> Session:
    """The run's HParams session: its start (the hyper-parameters) and its end (None: it has none)."""
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    end = content.get("_hparams_/session_end_info")
    return Session(start, None if end is None else plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info)


def test_a_run_shorter_than_the_log_interval_has_training_curves(tmp_path):
    run(compose_cfg(*TINY, "trainer.max_steps=20", "trainer.log_every_steps=50", "logger.images=0"), tmp_path)
    events = read_events(tmp_path)
    for tag in ("train/elbo/loss", "train/elbo/recon", "train/elbo/kl_z", "train/elbo/lr", "time/samples_per_s"):
        assert [e.step for e in events.Scalars(tag)] == [20], tag


def test_hparams_dashboard_of_a_folder_of_mixed_models_shows_every_models_metrics(tmp_path):
    """TensorBoard's own HParams backend, over a folder holding a VAE run, a DDGM run and a run that failed."""
    run(compose_cfg(*TINY, "trainer.max_steps=5", "logger.images=0", "logger.embedding=0"), tmp_path / "vae")
    run(
        compose_cfg(
            "model=ddgm",
            "data=gmm2d",
            "data.n_train=500",
            "data.n_test=200",
            "model.z_dim=2",
            "model.generator_hidden=[8]",
            "model.energy_hidden=[8]",
            "model.features=8",
            "model.experts=8",
            "model.eval_samples=200",
            "trainer.max_steps=5",
            "trainer.progress_bar=false",
            "device=cpu",
        ),
        tmp_path / "ddgm",
    )
    # A best_metric the model does not report: the run fails at its first evaluation, after it started.
    with pytest.raises(UserError, match="trainer.best_metric=eval/nothing is not a metric of this run"):
        run(
            compose_cfg(*TINY, "trainer.max_steps=5", "logger.images=0", "trainer.best_metric=eval/nothing"),
            tmp_path / "failed",
        )
    failed = hparams_session(read_events(tmp_path / "failed"))
    assert failed.start.hparams["trainer.best_metric"].string_value == "eval/nothing"
    assert failed.end.status == api_pb2.STATUS_FAILURE

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    hparams = backend_context.Context(
        base_plugin.TBContext(logdir=str(tmp_path), multiplexer=mux, data_provider=provider)
    )
    request = context.RequestContext()
    experiment = hparams.experiment_from_metadata(
        request,
        "",
        True,
        hparams.hparams_metadata(request, ""),
        hparams.hparams_from_data_provider(request, "", limit=None),
    )
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"eval/elbo", "eval/log_likelihood", "eval/modes_covered", "eval/high_quality"} <= metrics
    assert {"model._target_", "model.experts", "model.iw_samples"} <= {h.name for h in experiment.hparam_infos}


def test_a_run_whose_evaluations_outlast_training_says_how_to_shorten_them():
    assert evaluation_hint(train_seconds=0.8, eval_seconds=64.9).startswith(
        "the evaluations took longer than training: trainer.eval_iw_samples=N"
    )
    assert evaluation_hint(train_seconds=0.8, eval_seconds=5.6) is None  # short enough to wait for
    assert evaluation_hint(train_seconds=1540.0, eval_seconds=400.0) is None  # a long run's evaluations


def test_threads_and_evaluation_samples_are_trainer_keys(tmp_path):
    threads = torch.get_num_threads()
    try:
        trainer = build(compose_cfg(*TINY, "trainer.threads=1", "trainer.eval_iw_samples=7", "logger=none"), tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert trainer.model.cfg.iw_samples == 7 and trainer.run_config.model.iw_samples == 7
    # A model without importance samples has nothing to override (a sweep over mixed models may set it).
    build(
        compose_cfg(
            "model=ddgm",
            "data=gmm2d",
            "data.n_train=200",
            "data.n_test=100",
            "trainer.eval_iw_samples=7",
            "logger=none",
            "device=cpu",
        ),
        tmp_path / "ddgm",
    )


def test_a_model_run_without_its_experiment_names_it():
    def choices(**chosen):
        return OmegaConf.create({"experiment": None, **chosen})

    notice = experiment_notice(choices(model="avb", data="mnist"))
    assert notice.startswith(
        "model=avb data=mnist runs the model's own defaults; experiment=avb_mnist has the "
        "settings for this data (model.z_dim, model.noise_dim, model.hidden,"
    )
    assert experiment_notice(choices(model="ddgm", data="gmm2d")).split("; ")[1].startswith("experiment=ddgm_gmm ")
    assert experiment_notice(choices(model="avb", data="mnist", experiment="avb_mnist")) is None
    assert experiment_notice(choices(model="vae", data="mnist")) is None  # vae_mnist sets no model or data value
    assert experiment_notice(choices(model="vae", data="digits")) is None
    # A search of the project's own (hparams_search=adgm_optuna: model=adgm, data=mnist_100labels) sets its values.
    assert (
        experiment_notice(choices(model="adgm", data="mnist_100labels"))
        .split("; ")[1]
        .startswith("experiment=adgm_mnist ")
    )
    assert experiment_notice(choices(model="adgm", data="mnist_100labels", hparams_search="adgm_optuna")) is None


def test_progress_bars_and_log_lines_share_the_terminal(tmp_path):
    """With progress bars on, the evaluation has its own bar naming what it computes, log lines are
    written through tqdm (whole lines, never glued to a bar's line), and a last line gives the wall times."""
    # One stream for the bars (stderr) and the log (stdout), as on a terminal.
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dgm-run")),
            *TINY,
            "trainer.progress_bar=true",
            "trainer.max_steps=20",
            f"hydra.run.dir={tmp_path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.replace("\r", "\n").splitlines()
    assert any(line.startswith("evaluate eval/ elbo, log_likelihood:") and "2000/2000" in line for line in lines), (
        done.stdout
    )
    logged = [line for line in lines if "][INFO] - " in line]
    assert logged and all(line.startswith("[") for line in logged)  # every log line starts a line of its own
    assert "wall time: training " in logged[-3] and " s, evaluation " in logged[-3]  # then where the results are


def test_a_run_and_its_evaluation_end_with_where_their_results_are(tmp_path):
    """The last lines of the terminal (log and bars on one stream) name the directory, its metrics.json and
    the TensorBoard command, so that the progress bars cannot push them out of sight."""
    run_dir = tmp_path / "run"
    for args, results in (
        ([*TINY, "trainer.progress_bar=true", f"hydra.run.dir={run_dir}"], run_dir),
        ([f"evaluate={run_dir}", "trainer.progress_bar=true"], run_dir / "evaluation"),
    ):
        done = subprocess.run(
            [str(Path(sys.executable).with_name("dgm-run")), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout
        last = [line.split("][INFO] - ")[-1] for line in done.stdout.replace("\r", "\n").strip().splitlines()[-2:]]
        detail = "metrics.json, checkpoints/, events" if results == run_dir else "metrics.json, events"
        assert last == [f"results: {results} ({detail})", f"see them: tensorboard --logdir {results}"], done.stdout
        assert json.loads((results / "metrics.json").read_text())["step"] == 30


def test_fresh_run_refuses_a_directory_that_holds_a_run(cli, tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*TINY, f"hydra.run.dir={run_dir}")[0] == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    code, _, err = cli(*TINY, f"hydra.run.dir={run_dir}")
    assert code == 2 and f"already holds a run; continue it with resume={run_dir}" in err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_real_mnist_loads_through_torchvision_reader(mnist_root):
    from dgm_run.data.mnist import MNIST

    splits = MNIST(MNIST.Config(root=str(mnist_root))).load()
    assert splits.x_train.shape == (60000, 1, 28, 28) and splits.x_test.shape == (10000, 1, 28, 28)
    assert splits.y_train.bincount().tolist()[:3] == [5923, 6742, 5958]  # the official class counts
    assert splits.y_test.bincount().tolist()[:3] == [980, 1135, 1032]


def test_metrics_and_hparams_record_where_the_numbers_came_from(tmp_path):
    run(compose_cfg(*TINY, "trainer.max_steps=3"), tmp_path)
    recorded = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert recorded["torch"] == torch.__version__ and recorded["device"] == "cpu"
    assert recorded["dgm_run"] and recorded["command"]
    if (Path(__file__).resolve().parents[1] / ".git").exists():  # a checkout: its commit, 40 hex digits
        assert len(recorded["commit"]) == 40 and isinstance(recorded["dirty"], bool)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["provenance.torch"].string_value == torch.__version__
    assert hparams["provenance.device"].string_value == "cpu"
