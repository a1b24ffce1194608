"""optimizer.bias_correction=false: Adam as Kingma's AdaM steps in the M2 code of M1+M2 (dpkingma/nips14-ssl,
adam.py), checked against that update written out in NumPy; per phase, in experiment=m1m2_mnist's M2 only; its
learning rate decays in place and survives a checkpoint like Adam's (tests/test_graph.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgm_run.config import validate
from dgm_run.optim import UncorrectedAdam, build_optimizer
from tests.conftest import compose_cfg


def adam_without_correction(w, grads, lr, beta1, beta2, weight_decay):
    """The update of adam.py: moments from zero, never rescaled, no epsilon; the weight prior's gradient added."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = g + weight_decay * w
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g**2 - v)
        w -= lr * m / np.sqrt(v)
    return w


@pytest.mark.parametrize("weight_decay", [0.0, 1 / 60_000])
@pytest.mark.parametrize("tensor_lr", [False, True], ids=["lr", "capturable lr"])
def test_it_steps_as_kingmas_adam(weight_decay, tensor_lr):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    grads = [rng.normal(scale=10.0 ** rng.integers(-4, 2), size=(4, 3)) for _ in range(40)]
    w = torch.nn.Parameter(torch.tensor(start))
    lr = torch.tensor(3e-4, dtype=torch.float64) if tensor_lr else 3e-4
    optimizer = UncorrectedAdam([w], lr=lr, betas=(0.9, 0.999), eps=0.0, weight_decay=weight_decay)
    for g in grads:
        w.grad = torch.tensor(g)
        optimizer.step()
    expected = adam_without_correction(start, grads, 3e-4, 0.9, 0.999, weight_decay)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-15)


def test_its_first_steps_are_larger_than_adams_and_later_ones_the_same():
    """Its step is Adam's times (1 - beta1^t) / sqrt(1 - beta2^t): sqrt(10) at the first."""
    steps = {}
    for name, make in (("adam", torch.optim.Adam), ("uncorrected", UncorrectedAdam)):
        w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        optimizer = make([w], lr=1e-3, betas=(0.9, 0.999), eps=0.0, weight_decay=0.0)
        moves = []
        for _ in range(20_000):
            before = w.item()
            w.grad = torch.ones(1, dtype=torch.float64)
            optimizer.step()
            moves.append(before - w.item())
        steps[name] = np.array(moves)
    ratio = steps["uncorrected"] / steps["adam"]
    t = np.arange(1, 20_001)
    np.testing.assert_allclose(ratio, (1 - 0.9**t) / np.sqrt(1 - 0.999**t), rtol=1e-9)
    assert ratio[0] == pytest.approx(10**0.5) and ratio[-1] == pytest.approx(1, abs=1e-6)


def test_m1m2_paper_experiment_steps_m2_without_bias_correction_and_m1_with_it():
    """Kingma's M2 (learn_yz_x_ss.py) trains with adam.py; his M1 (gpulearn_z_x.py) with a bias-corrected Adam."""
    opt_cfg = validate(compose_cfg("experiment=m1m2_mnist")).optimizer
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    m2, m1 = build_optimizer(params, opt_cfg, "m2"), build_optimizer(params, opt_cfg, "m1")
    assert type(m2) is UncorrectedAdam and m2.param_groups[0]["weight_decay"] == opt_cfg.phases["m2"].weight_decay
    assert type(m1) is torch.optim.Adam


def test_its_state_survives_a_checkpoint(tmp_path):
    """Ten steps, a checkpoint of the moments, ten more in a fresh optimizer: the twenty steps of one."""
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(20)]
    start = torch.randn(4, 3)

    def trained(steps, w, optimizer):
        for g in steps:
            w.grad = g.clone()
            optimizer.step()

    def fresh():
        w = torch.nn.Parameter(start.clone())
        return w, UncorrectedAdam([w], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3)

    whole, whole_opt = fresh()
    trained(grads, whole, whole_opt)
    first, first_opt = fresh()
    trained(grads[:10], first, first_opt)
    torch.save({"w": first.detach(), "optimizer": first_opt.state_dict()}, tmp_path / "last.pt")
    state = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)  # as checkpoint.load reads
    second, second_opt = fresh()
    with torch.no_grad():
        second.copy_(state["w"])
    second_opt.load_state_dict(state["optimizer"])
    trained(grads[10:], second, second_opt)
    assert torch.equal(second, whole)
