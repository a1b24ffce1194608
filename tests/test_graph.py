"""The step captured as a CUDA graph: on CPU, the same step on fixed tensors and the capturable
optimizers; on a GPU (skipped elsewhere), replays against eager steps, the decay, NaN and resume
(tests/test_trainer.py: no host sync in captured steps)."""

from __future__ import annotations

import pytest
import torch

from dgm_run import checkpoint
from dgm_run.errors import UserError
from dgm_run.graph import CapturedStep
from dgm_run.optim import PhaseOptimizers
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg
from tests.test_trainer import build_trainer, two_player_cfg

cuda = pytest.mark.cuda  # skipped without a GPU (conftest.py); pytest -m cuda runs only these
ADGM = [
    "model=adgm",
    "data.n_labels=100",
    "model.a_dim=4",
    "model.z_dim=4",
    "model.hidden=[32,32]",
    "data.labelled_batch_size=20",
]


def drive(trainer, batches: int, wrap=None) -> None:
    """Train `batches` batches as Trainer.train_step does, through `wrap(step function)` when given."""
    plan = trainer.data.plan_epoch()
    step_fn = trainer.scheduled_step.for_epoch(0)
    step_fn = wrap(step_fn) if wrap else step_fn
    for i in range(batches):
        batch = trainer.data.batch(plan, i)
        trainer.progress.update(i, trainer.steps_per_epoch, trainer.total_steps)
        batch.progress = trainer.progress
        step_fn(batch)


@pytest.mark.parametrize("model", [["model.hidden=[32]", "model.z_dim=4"], ADGM])
def test_step_on_fixed_tensors_gives_the_trainers_numbers(tmp_path, model):
    """What a graph captures, the step function reading its batch from fixed tensors, run eagerly:
    parameters and loss sums equal the plain step's, bit for bit."""
    cfg = compose_cfg(*TINY, *model, "logger=none")
    plain, fixed = build_trainer(cfg, tmp_path / "plain"), build_trainer(cfg, tmp_path / "fixed")
    torch.manual_seed(1)
    drive(plain, 6)
    torch.manual_seed(1)
    drive(fixed, 6, wrap=lambda fn: CapturedStep(fn, capture=False))
    for (name, a), b in zip(plain.model.state_dict().items(), fixed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert plain.meter.read() == fixed.meter.read()


@pytest.mark.parametrize("bias_correction", [True, False])
def test_capturable_optimizers_decay_in_place_and_survive_a_checkpoint(tmp_path, bias_correction):
    cfg = two_player_cfg("optimizer.lr_decay=0.5", f"optimizer.bias_correction={bias_correction}")
    trainer = build_trainer(cfg, tmp_path)
    schedule, ocfg = trainer.model.schedule, trainer.run_config.optimizer
    optimizers = PhaseOptimizers(trainer.model, schedule, ocfg, capturable=True)
    lr = optimizers.optimizers["primal"].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    if bias_correction:  # Adam keeps its step count on the device only when capturable; Kingma's AdaM has none
        assert optimizers.optimizers["primal"].defaults["capturable"]
    trainer.scheduled_step.optimizers = optimizers.optimizers
    drive(trainer, 2)
    optimizers.end_epoch()
    # The decay writes into the tensor the step reads (a captured graph holds that tensor).
    assert optimizers.optimizers["primal"].param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-4)
    checkpoint.save(
        {
            "model": trainer.model.state_dict(),
            **optimizers.state_dict(),
            "epoch": 1,
            "step": 2,
            "batch_in_epoch": 0,
            "plan": None,
            "rng": {},
        },
        tmp_path / "ckpt.pt",
    )
    state = checkpoint.load(tmp_path / "ckpt.pt")

    restored = PhaseOptimizers(trainer.model, schedule, ocfg, capturable=True)
    live = {p: (o.param_groups[0]["lr"], o.param_groups[0]["initial_lr"]) for p, o in restored.optimizers.items()}
    restored.load_state_dict(state)
    for phase, (lr_tensor, initial) in live.items():
        group = restored.optimizers[phase].param_groups[0]
        # Loaded into the tensors the decay and a captured step share, not replaced by the checkpoint's.
        assert group["lr"] is lr_tensor and group["initial_lr"] is initial, phase
        assert lr_tensor.device == group["params"][0].device
    for phase, optimizer in optimizers.optimizers.items():
        again = restored.optimizers[phase]
        assert float(again.param_groups[0]["lr"]) == float(optimizer.param_groups[0]["lr"])
        for p in optimizer.param_groups[0]["params"]:  # the same parameters, the same model
            for key, value in optimizer.state[p].items():
                assert torch.equal(value, again.state[p][key]), (phase, key)
    assert restored.learning_rates() == optimizers.learning_rates()
    # The schedulers carry on from where they were: one more epoch halves the rate again.
    restored.end_epoch()
    assert restored.learning_rates()["primal"] == pytest.approx(2.5e-4)
    assert float(live["primal"][0]) == pytest.approx(2.5e-4)  # what a captured step reads


def test_a_plain_optimizer_keeps_numbers_after_loading_a_capturable_ones_checkpoint(tmp_path):
    """A run captured on a GPU and resumed eagerly (say, on a CPU) gets plain-number rates back."""
    trainer = build_trainer(two_player_cfg(), tmp_path)
    schedule, ocfg = trainer.model.schedule, trainer.run_config.optimizer
    capturable = PhaseOptimizers(trainer.model, schedule, ocfg, capturable=True)
    plain = PhaseOptimizers(trainer.model, schedule, ocfg)
    plain.load_state_dict(capturable.state_dict())
    group = plain.optimizers["primal"].param_groups[0]
    assert type(group["lr"]) is float and group["lr"] == pytest.approx(1e-3)


def test_cuda_graph_settings_are_checked(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"trainer.cuda_graph=true needs a CUDA device \(this run trains on cpu\)"):
            run(compose_cfg(*TINY, "trainer.cuda_graph=true"), tmp_path)
    with pytest.raises(UserError, match="trainer.compile: reduce-overhead captures CUDA graphs of its own"):
        run(compose_cfg(*TINY, "trainer.compile=reduce-overhead", "trainer.cuda_graph=true"), tmp_path)
    with pytest.raises(UserError, match="trainer.compile: 'fast' is not allowed; choose one of false, true, default"):
        run(compose_cfg(*TINY, "trainer.compile=fast"), tmp_path)
    trainer = build_trainer(compose_cfg(*TINY, "trainer.compile=true"), tmp_path / "ok")
    assert trainer.settings.compile == "default" and not trainer.cuda_graph


# ------------------------------------------------------------------------------------ on a GPU
@cuda
@pytest.mark.parametrize("bias_correction", [True, False])
def test_graph_replays_equal_eager_steps(tmp_path, bias_correction):
    """TwoPlayer draws no random numbers in its loss: five captured steps (three warm-up calls, the
    capture, one replay, then more replays) move the parameters as five eager steps do, with Adam and with
    Kingma's AdaM (optimizer.bias_correction=false)."""
    adam = f"optimizer.bias_correction={bias_correction}"
    eager = build_trainer(two_player_cfg("device=cuda", "trainer.cuda_graph=false", adam), tmp_path / "eager")
    graphed = build_trainer(two_player_cfg("device=cuda", "trainer.cuda_graph=true", adam), tmp_path / "graph")
    assert graphed.cuda_graph and not eager.cuda_graph
    for trainer in (eager, graphed):
        torch.manual_seed(3)
        drive(trainer, 7)
    assert graphed.scheduled_step.for_epoch(0).graph is not None
    for (name, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@cuda
def test_decay_reaches_the_captured_optimizer(tmp_path):
    """After the capture, halving the learning rate halves the next replayed Adam update."""
    trainers = [
        build_trainer(two_player_cfg("device=cuda", "trainer.cuda_graph=true"), tmp_path / str(i)) for i in range(2)
    ]
    deltas = []
    for decay, trainer in zip((False, True), trainers):
        torch.manual_seed(3)
        drive(trainer, 5)  # captured by now
        if decay:
            trainer.schedulers["primal"].base_lrs = [lr / 2 for lr in trainer.schedulers["primal"].base_lrs]
            trainer.phase_optimizers.end_epoch()
        before = trainer.model.generator.weight.detach().clone()
        torch.manual_seed(4)
        drive(trainer, 1)
        deltas.append(trainer.model.generator.weight.detach() - before)
    torch.testing.assert_close(deltas[1], deltas[0] / 2, rtol=1e-3, atol=1e-7)


@cuda
def test_nan_in_a_batch_stops_the_captured_run_with_phase_and_step(tmp_path, monkeypatch):
    cfg = two_player_cfg("device=cuda", "trainer.cuda_graph=true", "trainer.max_steps=20", "trainer.log_every_steps=10")
    trainer = build_trainer(cfg, tmp_path)
    batch = trainer.data.batch

    def poisoned(plan, i):
        b = batch(plan, i)
        if i == 11:  # step 12, long after the capture
            b.x = b.x * float("nan")
        return b

    monkeypatch.setattr(trainer.data, "batch", poisoned)
    with pytest.raises(UserError, match="the adversary loss was NaN or infinite at step 12"):
        trainer.fit()


@cuda
def test_captured_run_resumes_mid_epoch(cli, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY[:-1], "device=cuda", "trainer.checkpoint_every_steps=7", f"hydra.run.dir={run_dir}"]
    code, _, err = cli(*args, "trainer.max_steps=12")
    assert code == 0, err
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 12 and 0 < state["batch_in_epoch"] < 80
    code, _, err = cli(f"resume={run_dir}", "trainer.max_steps=25")
    assert code == 0, err
    metrics = checkpoint.load(run_dir / "checkpoints" / "last.pt")["metrics"]
    assert metrics["step"] == 25 and torch.isfinite(torch.tensor(metrics["eval/elbo"]))


@cuda
def test_a_model_that_draws_random_numbers_replays_as_its_eager_steps(tmp_path):
    """The VAE draws its noise inside the step: replays take fresh draws from the same generator, so eight
    captured steps (warm-up, capture, replays) from one seed end where eight eager steps do."""
    cfgs = {
        graph: compose_cfg(
            *TINY[:-1],
            "device=cuda",
            "logger=none",
            "trainer.precision=fp32",
            f"trainer.cuda_graph={str(graph).lower()}",
        )
        for graph in (False, True)
    }
    trainers = {graph: build_trainer(cfg, tmp_path / str(graph)) for graph, cfg in cfgs.items()}
    for trainer in trainers.values():
        torch.manual_seed(5)
        drive(trainer, 8)
    assert trainers[True].scheduled_step.for_epoch(0).graph is not None
    eager, graphed = (trainers[g].model.state_dict() for g in (False, True))
    for name in eager:
        torch.testing.assert_close(graphed[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)
    # The noise did change: another seed ends elsewhere.
    other = build_trainer(cfgs[True], tmp_path / "other")
    torch.manual_seed(6)
    drive(other, 8)
    assert not torch.allclose(other.model.state_dict()[name], graphed[name])


@cuda
def test_a_captured_run_resumed_before_a_decay_boundary_decays_as_an_uninterrupted_one(tmp_path):
    """Halving the rate every epoch: a run stopped after epoch 1 and resumed in a new trainer (a new capture
    after the checkpoint's load) ends with the parameters of a run that was never stopped. Before the fix,
    the resumed graph kept the rate it was captured with and missed the decay at the end of epoch 2."""

    def cfg(epochs: int):
        return two_player_cfg(
            "device=cuda",
            "trainer.cuda_graph=true",
            "trainer.max_steps=null",
            f"trainer.max_epochs={epochs}",
            "trainer.batch_size=1000",
            "optimizer.lr_decay=0.5",
            "optimizer.lr_decay_every_epochs=1",
            "trainer.eval_every_epochs=10",
        )

    torch.manual_seed(0)
    whole = build_trainer(cfg(3), tmp_path / "whole")
    whole.fit()
    torch.manual_seed(0)
    first = build_trainer(cfg(1), tmp_path / "part")
    first.fit()
    from dgm_run.train import build

    resumed = build(cfg(3), tmp_path / "part", state=checkpoint.load(tmp_path / "part" / "checkpoints" / "last.pt"))
    resumed.fit()
    for phase, optimizer in resumed.optimizers.items():
        lr = optimizer.param_groups[0]["lr"]
        assert lr.device.type == "cuda" and float(lr) == pytest.approx(1e-3 / 8), phase
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)


@cuda
def test_m1m2_captures_its_m2_step_at_the_schedule_switch_and_keeps_training(tmp_path):
    cfg = compose_cfg(
        *TINY[:-1],
        "device=cuda",
        "trainer.cuda_graph=true",
        "logger=none",
        "model=m1m2",
        "data.n_labels=100",
        "data.labelled_batch_size=10",
        "model.m1_hidden=[32]",
        "model.m1_z_dim=8",
        "model.hidden=[32]",
        "model.z_dim=4",
        "model.m1_epochs=1",
        "trainer.max_epochs=5",
        "trainer.max_steps=null",
        "trainer.batch_size=500",
        "trainer.eval_iw_samples=1",
    )
    trainer = build_trainer(cfg, tmp_path)
    m2_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not n.startswith("m1.")}
    metrics = trainer.fit()
    steps = list(trainer.scheduled_step._functions.values())
    assert len(steps) == 2 and all(step.graph is not None for step in steps)
    assert any(not torch.equal(p.detach(), m2_before[n]) for n, p in trainer.model.named_parameters() if n in m2_before)
    assert 0 <= metrics["eval/error"] < 0.9


@cuda
@pytest.mark.parametrize("setting", ["trainer.precision=bf16", "trainer.compile=default"])
def test_bf16_and_compile_compose_with_the_graph(tmp_path, setting):
    """Each trains captured to a finite ELBO close to that of the plain captured fp32 step."""
    results = {}
    for name, extra in (("plain", []), ("with", [setting])):
        torch.manual_seed(0)
        trainer = build_trainer(
            compose_cfg(
                *TINY[:-1],
                "device=cuda",
                "trainer.cuda_graph=true",
                "logger=none",
                "trainer.max_steps=60",
                "trainer.eval_iw_samples=1",
                *extra,
            ),
            tmp_path / name,
        )
        results[name] = trainer.fit()["eval/elbo"]
        assert trainer.scheduled_step.for_epoch(0).graph is not None
    assert torch.isfinite(torch.tensor(results["with"])) and abs(results["with"] - results["plain"]) < 10


@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs: device.index=1 must be another GPU")
def test_a_run_on_the_second_gpu_captures_there(tmp_path):
    trainer = build_trainer(
        compose_cfg(*TINY[:-1], "device=cuda", "device.index=1", "logger=none", "trainer.max_steps=6"), tmp_path
    )
    assert torch.cuda.current_device() == 1
    trainer.fit()
    assert all(p.device == torch.device("cuda", 1) for p in trainer.model.parameters())
