"""The training loop's contract: schedules, per-phase optimizers, divergence, checkpoints."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dgm_run import checkpoint
from dgm_run.errors import UserError
from dgm_run.train import build, run
from tests.conftest import TINY, compose_cfg


def two_player_cfg(*overrides: str, nan_at_call=None, simultaneous=False):
    cfg = compose_cfg(*TINY, "trainer.max_steps=6", "logger=none", *overrides)
    cfg.model = OmegaConf.create(
        {
            "_target_": "tests.toy_models.TwoPlayer",
            "nan_at_call": nan_at_call,
            "schedule": [{"phase": "adversary", "steps": 2}, {"phase": "primal", "steps": 1}],
            "simultaneous": simultaneous,
        }
    )
    return cfg


def build_trainer(cfg, run_dir):
    """The trainer `run` would build, without running it."""
    from dgm_run.train import build

    return build(cfg, run_dir)


def optimizer_steps_per_phase(trainer, batches: int) -> dict[str, int]:
    """Train `batches` batches; count each phase's optimizer steps with step hooks."""
    steps = {p: 0 for p in trainer.optimizers}
    for phase, optimizer in trainer.optimizers.items():
        optimizer.register_step_post_hook(lambda *_, phase=phase: steps.__setitem__(phase, steps[phase] + 1))
    plan = trainer.data.plan_epoch()
    for i in range(batches):
        trainer.train_step(trainer.data.batch(plan, i))
    return steps


def test_schedule_runs_each_phase_its_steps_per_batch(tmp_path):
    trainer = build_trainer(two_player_cfg(), tmp_path)
    assert optimizer_steps_per_phase(trainer, 3) == {"adversary": 6, "primal": 3}
    assert trainer.model.calls == ["adversary", "adversary", "primal"] * 3


def test_each_phase_changes_only_its_own_parameters(tmp_path):
    trainer = build_trainer(two_player_cfg("trainer.max_steps=1"), tmp_path)
    model, batch = trainer.model, trainer.data.batch(trainer.data.plan_epoch(), 0)
    for phase, optimizer in trainer.optimizers.items():
        own = {id(p) for p in model.phase_parameters(phase)}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        model.loss(phase, batch)["loss"].backward()
        # No gradient leaks onto another phase's parameters...
        assert all(p.grad is None for p in model.parameters() if id(p) not in own), phase
        optimizer.step()
        # ...and the step moves only this phase's parameters.
        for name, p in model.named_parameters():
            changed = not torch.equal(before[name], p.detach())
            assert changed == (id(p) in own), (phase, name)


def test_unknown_phase_in_schedule_is_a_user_error(tmp_path):
    cfg = two_player_cfg()
    cfg.model.schedule[0].phase = "advesary"
    with pytest.raises(
        UserError,
        match=r"model.schedule\[0\].phase: 'advesary' is not a phase of TwoPlayer; "
        r"phases: adversary, primal",
    ):
        run(cfg, tmp_path)


def test_nan_loss_stops_with_phase_and_step_and_keeps_last_good_checkpoint(tmp_path):
    # 3 calls per batch; call 22 is the 1st adversary step of batch 8 (step 8), after the checkpoint at step 5.
    cfg = two_player_cfg(
        "trainer.max_steps=20", "trainer.checkpoint_every_steps=5", "trainer.log_every_steps=2", nan_at_call=22
    )
    with pytest.raises(UserError, match=r"the adversary loss was NaN or infinite at step 8; the last good checkpoint"):
        run(cfg, tmp_path)
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 5  # the checkpoint of step 5 stands; step 10 was never written
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_lr_decays_stepwise_to_floor(tmp_path):
    cfg = compose_cfg(
        *TINY,
        "optimizer.lr=1e-3",
        "optimizer.lr_decay=0.5",
        "optimizer.lr_decay_every_epochs=2",
        "optimizer.min_lr=3e-4",
    )
    trainer = build_trainer(cfg, tmp_path)
    lrs = []
    for _ in range(6):
        lrs.append(trainer.optimizers["elbo"].param_groups[0]["lr"])
        trainer.schedulers["elbo"].step()
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 3e-4, 3e-4])


def test_schedule_entries_run_in_their_epochs(tmp_path):
    cfg = two_player_cfg("trainer.max_steps=null", "trainer.max_epochs=3", "trainer.batch_size=4000")
    cfg.model.schedule = [
        {"phase": "adversary", "steps": 1, "until_epoch": 1},
        {"phase": "primal", "steps": 2, "from_epoch": 1},
    ]
    trainer = build_trainer(cfg, tmp_path)
    trainer.fit()
    assert trainer.model.calls == ["adversary"] * 2 + ["primal"] * 8  # 2 batches per epoch


def test_max_minutes_stops_training_and_still_evaluates(tmp_path):
    # 6 ms of training: a few steps, far fewer than one epoch (80 steps) of the 50 asked for.
    metrics = run(
        compose_cfg(*TINY, "trainer.max_steps=null", "trainer.max_epochs=50", "trainer.max_minutes=0.0001"), tmp_path
    )
    assert 1 <= metrics["step"] < 80 and metrics["epoch"] == 0 and "eval/elbo" in metrics


def test_simultaneous_schedule_takes_every_gradient_before_any_step(tmp_path):
    trainer = build_trainer(two_player_cfg(simultaneous=True), tmp_path)
    calls = trainer.model.calls  # the model appends each loss call; the hooks append each step
    for phase, optimizer in trainer.optimizers.items():
        optimizer.register_step_post_hook(lambda *_, phase=phase: calls.append(f"step {phase}"))
    plan = trainer.data.plan_epoch()
    for i in range(2):
        trainer.train_step(trainer.data.batch(plan, i))
    # Round 1: both players' gradients at the same parameters, then both step; round 2: the adversary's second step.
    assert calls == ["adversary", "primal", "step adversary", "step primal", "adversary", "step adversary"] * 2


def test_gradient_clipping_applies_per_phase_to_the_gradients_each_optimizer_steps_with(tmp_path):
    """optimizer.clip_value for every phase, and a clip_norm for the adversary alone: each phase's optimizer
    steps with its own gradients clipped (seen by a step pre-hook registered after the clipping's)."""
    cfg = two_player_cfg("optimizer.clip_value=0.01", "+optimizer.phases.adversary.clip_norm=0.001")
    trainer = build_trainer(cfg, tmp_path)
    seen: dict[str, list[list[torch.Tensor]]] = {p: [] for p in trainer.optimizers}
    for phase, optimizer in trainer.optimizers.items():
        optimizer.register_step_pre_hook(
            lambda opt, *_, phase=phase: seen[phase].append([p.grad.clone() for p in opt.param_groups[0]["params"]])
        )
    plan = trainer.data.plan_epoch()
    for i in range(3):
        trainer.train_step(trainer.data.batch(plan, i))
    norm = {
        p: [float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) for grads in steps]
        for p, steps in seen.items()
    }
    assert len(norm["adversary"]) == 6 and max(norm["adversary"]) <= 0.001
    assert min(norm["primal"]) > 0.001  # the adversary's bound is its own
    for phase, steps in seen.items():
        assert all(bool((g.abs() <= 0.01).all()) for grads in steps for g in grads), phase
    assert any(bool((g.abs() == 0.01).any()) for grads in seen["primal"] for g in grads)  # the bound bites


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["vae", "adgm", "avb", "adgm_authors"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda_graph"])
def test_training_steps_never_wait_for_the_gpu(tmp_path, model, graph):
    """Losses stay on the device between log intervals, batches are drawn and binarized there:
    a step that copied anything to the host would raise under the sync debug mode. Eager steps, and
    the replays of the step captured as a CUDA graph; adgm_authors: with the authors' options of issue 13."""
    labels = ["data.n_labels=100", "model.a_dim=4", "model.z_dim=4", "model.hidden=[32,32]"] if "adgm" in model else []
    if model == "adgm_authors":
        labels += [
            "optimizer.clip_norm=5",
            "optimizer.clip_value=1",
            "model.samples=3",
            "model.mc_average=authors",
            "model.p_a=standard",
            "model.init=glorot",
        ]
    cfg = compose_cfg(
        *TINY[:-1],
        "device=cuda",
        f"model={model.removesuffix('_authors')}",
        *labels,
        "trainer.log_every_steps=1000",
        "logger=none",
        f"trainer.cuda_graph={str(graph).lower()}",
    )
    trainer = build_trainer(cfg, tmp_path)
    plan = trainer.data.plan_epoch()
    first = 5 if graph else 1  # the first step may initialise lazily; warm-up calls and the capture may sync
    for i in range(first):
        trainer.train_step(trainer.data.batch(plan, i))
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(first, first + 3):
            trainer.train_step(trainer.data.batch(plan, i))
    finally:
        torch.cuda.set_sync_debug_mode(0)


def checkpoint_steps(monkeypatch, cfg, run_dir) -> tuple[list[int], int]:
    """Train `cfg` to its end; the step of every checkpoint written (the real writes), and steps per epoch."""
    steps = []
    save = checkpoint.save

    def spy(state, path):
        steps.append(state["step"])
        save(state, path)

    monkeypatch.setattr(checkpoint, "save", spy)
    trainer = build_trainer(cfg, run_dir)
    trainer.fit()
    return steps, trainer.steps_per_epoch


@pytest.mark.parametrize("minutes", [None, 1.0])
def test_epochs_without_an_evaluation_write_no_checkpoint_within_the_interval(monkeypatch, tmp_path, minutes):
    """An epoch's end writes a checkpoint only after its evaluation or once checkpoint_every_minutes
    have passed, so that a short epoch does not pay for a write; the end of training writes one."""
    cfg = two_player_cfg(
        "trainer.max_steps=null",
        "trainer.max_epochs=4",
        "trainer.batch_size=2000",
        "trainer.eval_every_epochs=2",
        f"trainer.checkpoint_every_minutes={minutes or 'null'}",
    )
    steps, per_epoch = checkpoint_steps(monkeypatch, cfg, tmp_path)
    assert per_epoch > 1 and steps == [2 * per_epoch, 4 * per_epoch, 4 * per_epoch]


def test_a_checkpoint_is_written_once_its_interval_has_passed(monkeypatch, tmp_path):
    cfg = two_player_cfg(
        "trainer.max_steps=null",
        "trainer.max_epochs=2",
        "trainer.batch_size=2000",
        "trainer.eval_every_epochs=2",
        "trainer.checkpoint_every_minutes=1e-9",
    )
    steps, per_epoch = checkpoint_steps(monkeypatch, cfg, tmp_path)
    # Every batch is past the interval: one write per step, one more at each epoch end that has no evaluation.
    assert steps[: per_epoch + 1] == [*range(1, per_epoch + 1), per_epoch]


def test_a_cpu_run_takes_denormal_numbers_as_zero(tmp_path):
    """A CPU computes with numbers below float's normal range many times slower; a weight that only decays
    (a pruned unit's) ends there. A run on the CPU flushes them to zero."""
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39])  # below float32's smallest normal number, 1.2e-38
    assert float(tiny * 1.0) != 0.0
    build(compose_cfg(*TINY), tmp_path)
    assert float(tiny * 1.0) == 0.0
