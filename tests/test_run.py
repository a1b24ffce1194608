"""End-to-end runs: the run directory, metrics.json, and TensorBoard events read back with TensorBoard's reader."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import TINY


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_default_command_trains_and_logs_everything(cli, tmp_path, monkeypatch):
    """`dgm-run` as the README runs it (defaults: VAE on the embedded digits), shortened to two epochs."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("trainer.max_epochs=2", "trainer.eval_every_epochs=1", "trainer.progress_bar=false")
    assert code == 0, err
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))  # outputs/DATE/TIME
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["step"] == 160
    # A VAE that learned anything is far better than the 784 * log 2 = 543 nats of a uniform model.
    assert -250 < metrics["eval/elbo"] < -100
    assert metrics["eval/log_likelihood"] > metrics["eval/elbo"]

    events = read_events(run_dir)
    scalars = set(events.Tags()["scalars"])
    assert {"train/elbo/loss", "train/elbo/recon", "train/elbo/kl_z", "train/elbo/lr", "time/samples_per_s",
            "eval/elbo", "eval/log_likelihood"} <= scalars
    losses = [e.value for e in events.Scalars("train/elbo/loss")]
    assert len(losses) == 160 // 50 and losses[-1] < losses[0]
    assert [e.step for e in events.Scalars("eval/elbo")] == [80, 160]
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    image = events.Images("samples")[-1]
    assert image.width > 8 * 28 and image.height > 8 * 28  # an 8 x 8 grid of digits

    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model.z_dim"].number_value == 50
    assert session.hparams["data._target_"].string_value == "dgm_run.data.digits.Digits"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"eval/elbo", "eval/log_likelihood"}


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
