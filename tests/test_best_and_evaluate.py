"""After training: the best checkpoint by a validation metric, early stopping, and `dgm-run evaluate=DIR`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run import checkpoint
from dgm_run.train import evaluation_paths, run
from tests.conftest import TINY, compose_cfg

# 7,500 training digits once 500 are held out for validation: 75 steps per epoch, evaluated after each.
EPOCHS = [
    *TINY,
    "trainer.max_steps=null",
    "trainer.eval_every_epochs=1",
    "data.n_validation=500",
    "logger.images=0",
    "logger.embedding=0",
]


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_best_checkpoint_holds_the_evaluation_with_the_best_validation_metric(tmp_path):
    run(compose_cfg(*EPOCHS, "trainer.max_epochs=3", "trainer.best_metric=valid/elbo"), tmp_path)
    logged = scalars(tmp_path, "valid/elbo")
    assert [step for step, _ in logged] == [75, 150, 225]
    best_step, best_value = max(logged, key=lambda s: s[1])  # best_mode=auto: the highest ELBO
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == best_step and best["epoch"] == best_step // 75
    assert best["metrics"]["valid/elbo"] == pytest.approx(best_value)
    assert best["best"] == {
        "metric": "valid/elbo",
        "value": best["metrics"]["valid/elbo"],
        "epoch": best["epoch"],
        "stale": 0,
    }


def test_early_stopping_stops_after_patience_evaluations_without_a_better_value(tmp_path, caplog):
    # best_mode=min on the ELBO: the first evaluation stays the best, so that the patience runs out.
    caplog.set_level("INFO")
    metrics = run(
        compose_cfg(
            *EPOCHS,
            "trainer.max_epochs=10",
            "trainer.best_metric=valid/elbo",
            "trainer.best_mode=min",
            "trainer.early_stop_patience=2",
        ),
        tmp_path,
    )
    assert metrics["epoch"] == 3 and metrics["step"] == 225  # evaluations at epochs 1 (the best), 2 and 3
    assert [step for step, _ in scalars(tmp_path, "valid/elbo")] == [75, 150, 225]
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 1 and checkpoint.load(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3
    assert "early stop: valid/elbo has not improved for 2 evaluations (best" in caplog.text


def test_evaluate_dir_gives_the_runs_own_final_metrics_beside_its_checkpoint(cli, tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*TINY, "data.n_validation=500", f"hydra.run.dir={run_dir}")[0] == 0
    last = run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    code, _, err = cli(f"evaluate={run_dir}", "trainer.progress_bar=false")
    assert code == 0, err
    out = run_dir / "evaluation"
    final, evaluated = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, out))
    final.pop("time/eval_s"), evaluated.pop("time/eval_s")
    # The same numbers; where they came from differs in the command line only.
    assert evaluated.pop("provenance")["command"] != final.pop("provenance")["command"]
    assert evaluated == final and {"eval/elbo", "valid/elbo", "step"} <= set(evaluated)
    assert last.read_bytes() == before and not (out / "checkpoints").exists()
    assert scalars(out, "eval/elbo") == [(30, pytest.approx(final["eval/elbo"]))]
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    assert (out / "projector_config.pbtxt").is_file()

    # A trainer key may change: fewer importance samples, another estimate; it replaces the events at that step.
    assert cli(f"evaluate={run_dir}", "trainer.eval_iw_samples=1", "trainer.progress_bar=false")[0] == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["eval/log_likelihood"] != final["eval/log_likelihood"]
    assert scalars(out, "eval/log_likelihood") == [(30, pytest.approx(again["eval/log_likelihood"]))]

    code, _, err = cli(f"evaluate={run_dir}", "model.z_dim=3")
    assert code == 2 and err.strip() == (
        "dgm-run: error: evaluate: only trainer.*, logger.*, data.root, "
        "data.test_binarize keys may change when evaluating (got model.z_dim=3)"
    )
    code, _, err = cli(f"evaluate={tmp_path / 'nothing'}")
    assert code == 2 and f"evaluate={tmp_path / 'nothing'}: no config.yaml there" in err
    assert not (tmp_path / "nothing").exists()  # the evaluation folder Hydra made is taken back


def test_evaluation_paths_of_a_run_and_of_its_checkpoint_files(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    assert evaluation_paths(run_dir) == (run_dir, checkpoints / "last.pt", run_dir / "evaluation")
    assert evaluation_paths(checkpoints / "best.pt") == (run_dir, checkpoints / "best.pt", run_dir / "evaluation-best")
    assert evaluation_paths(checkpoints / "last.pt")[2] == run_dir / "evaluation"
    checkpoints.mkdir(parents=True)
    monkeypatch.chdir(checkpoints)  # a file named from inside checkpoints/
    found, _, out = evaluation_paths(Path("best.pt"))
    assert found.resolve() == run_dir.resolve() and out.resolve() == (run_dir / "evaluation-best").resolve()


def test_evaluate_a_best_checkpoint_into_its_own_folder(cli, tmp_path):
    """evaluate=DIR/checkpoints/best.pt: the best evaluation's metrics again, in DIR/evaluation-best/; the test
    protocol may change (data.test_binarize)."""
    run_dir = tmp_path / "run"
    assert (
        cli(
            *EPOCHS,
            "trainer.max_epochs=2",
            "trainer.best_metric=valid/elbo",
            "trainer.best_mode=min",
            f"hydra.run.dir={run_dir}",
        )[0]
        == 0
    )
    best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    assert best["step"] == 75  # best_mode=min on the ELBO: the first evaluation, not the last
    target = run_dir / "checkpoints" / "best.pt"
    out = run_dir / "evaluation-best"
    code, _, err = cli(f"evaluate={target}", "trainer.progress_bar=false")
    assert code == 0, err
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["step"] == 75 and evaluated["valid/elbo"] == pytest.approx(best["metrics"]["valid/elbo"])
    assert not (run_dir / "evaluation").exists()

    # The grey-level held-out digits instead of one binarization: other numbers, replacing the events at step 75.
    assert cli(f"evaluate={target}", "data.test_binarize=grey", "trainer.progress_bar=false")[0] == 0
    grey = json.loads((out / "metrics.json").read_text())
    assert grey["step"] == 75 and grey["eval/elbo"] != pytest.approx(evaluated["eval/elbo"])
    assert scalars(out, "eval/elbo") == [(75, pytest.approx(grey["eval/elbo"]))]

    code, _, err = cli(f"evaluate={run_dir / 'checkpoints' / 'nothing.pt'}")
    assert code == 2 and err.strip() == (
        f"dgm-run: error: checkpoint {run_dir / 'checkpoints' / 'nothing.pt'} is missing; "
        f"restore a good copy, or evaluate another of {run_dir / 'checkpoints'}"
    )
    assert not (run_dir / "evaluation-nothing").exists()
