"""M2, ADGM and SDGM: the exact sum over y against per-label loops, learning from few labels, pictures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.checks import InvalidValue
from dgm_run.data.base import DataSpec
from dgm_run.errors import UserError
from dgm_run.models import nn as nn_module
from dgm_run.models.semi_supervised import adgm as adgm_module
from dgm_run.models.semi_supervised import auxiliary as auxiliary_module
from dgm_run.models.semi_supervised import m2 as m2_module
from dgm_run.models.semi_supervised import sdgm as sdgm_module
from dgm_run.models.semi_supervised.adgm import ADGM
from dgm_run.models.semi_supervised.family import Labels
from dgm_run.models.semi_supervised.m2 import M2
from dgm_run.models.semi_supervised.sdgm import SDGM
from dgm_run.train import run
from tests.conftest import compose_cfg

SPEC = DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90, n_labels=9)


def fixed_noise(monkeypatch, modules, *noises: torch.Tensor) -> None:
    """Make `reparameterize` of each of `modules` use the given standard-normal draws, in order."""
    queue = list(noises)
    for module in modules:
        monkeypatch.setattr(module, "reparameterize", lambda mu, logvar: mu + torch.exp(0.5 * logvar) * queue.pop(0))


def log_weight(model, x: torch.Tensor, labels: Labels) -> torch.Tensor:
    """One draw's log w of the rows of `labels`: of a ~ q(a|x) too for ADGM and SDGM."""
    return model.log_weight(x, labels) if isinstance(model, M2) else model.log_weight(x, labels, model.draw_a(x))


def exact_sum_against_the_textbook(model) -> dict[str, float]:
    """The model's loss terms (the exact sum over y of labels.py: what does not depend on y computed once
    per x) against the textbook exact sum of dgm_run.commands.straightforward (x tiled over the labels,
    one-hot y concatenated to every first layer, q(a|x) on every row) at the same parameters and seed."""
    from dgm_run.commands.straightforward import compare, reference_for
    from dgm_run.contract import Batch

    batch = Batch(
        x=torch.bernoulli(torch.full((5, 1, 4, 4), 0.4)),
        x_labelled=torch.bernoulli(torch.full((4, 1, 4, 4), 0.6)),
        y_labelled=torch.tensor([0, 2, 1, 2]),
    )
    reference = reference_for(model)
    check = compare(model, reference, batch, seed=1)
    # The agreement is the same draws' doing: from another seed, the loss differs.
    assert abs(compare(model, reference, batch, seed=2)["loss"] - check["reference_loss"]) > 1e-3
    return check


def test_m2_exact_sum_matches_a_loop_over_concatenated_layers():
    torch.manual_seed(0)
    model = M2(M2.Config(z_dim=2, hidden=[8, 6], samples=2), SPEC)
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


@pytest.mark.parametrize("model_class", [ADGM, SDGM])
def test_auxiliary_models_exact_sum_matches_a_per_label_loop(model_class):
    """Every label at once (q(a|x) and x's first-layer parts computed once per x) equals the textbook sum
    that recomputes q(a|x) and every first layer for each label, given the same draws of a and z."""
    torch.manual_seed(0)
    model = model_class(model_class.Config(a_dim=3, z_dim=2, hidden=[8, 6]), SPEC)
    check = exact_sum_against_the_textbook(model)
    assert check["max_rel_diff"] < 1e-5 and check["max_abs_diff"] < 1e-4, check


@pytest.mark.parametrize("model_class", [M2, ADGM, SDGM])
@pytest.mark.parametrize("second", ["every", "soft"])
def test_labelled_and_unlabelled_in_one_pass_match_two_passes(monkeypatch, model_class, second):
    """Rows of given labels followed by every label (or relaxed labels) in one pass through the
    networks give what two separate passes give, with the same draws."""
    torch.manual_seed(0)
    auxiliary = model_class is not M2
    model = model_class(model_class.Config(z_dim=2, hidden=[8, 6], **({"a_dim": 3} if auxiliary else {})), SPEC)
    x_l, x_u = torch.bernoulli(torch.full((4, 16), 0.4)), torch.bernoulli(torch.full((5, 16), 0.6))
    y_l = torch.tensor([0, 2, 1, 2])
    soft = F.softmax(torch.randn(5, 3), -1) if second == "soft" else None
    u_rows = 5 * 3 if second == "every" else 5
    eps_a = [torch.randn(4, 3), torch.randn(5, 3)] if auxiliary else []
    eps_z = [torch.randn(4, 2), torch.randn(u_rows, 2)]

    def draws(*noises):  # the monkeypatched reparameterize takes them in the order of the pass
        own = {M2: m2_module, ADGM: adgm_module, SDGM: sdgm_module}[model_class]
        fixed_noise(monkeypatch, [own, auxiliary_module] if auxiliary else [own], *noises)

    rest = {"every": 5} if second == "every" else {"soft": soft}
    draws(*([torch.cat(eps_a)] if auxiliary else []), torch.cat(eps_z))
    x = torch.cat([x_l, x_u])
    one_pass = log_weight(model, x, Labels(3, given=y_l, **rest))
    draws(*eps_a[:1], eps_z[0])
    labelled = log_weight(model, x_l, Labels(3, given=y_l))
    draws(*eps_a[1:], eps_z[1])
    unlabelled = log_weight(model, x_u, Labels(3, **rest))
    torch.testing.assert_close(one_pass, torch.cat([labelled, unlabelled]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class", [M2, ADGM, SDGM])
def test_every_parameter_gets_a_gradient(model_class):
    torch.manual_seed(0)
    model = model_class(model_class.Config(z_dim=2, hidden=[8]), SPEC)
    from dgm_run.data.base import Batch

    batch = Batch(
        x=torch.bernoulli(torch.full((6, 1, 4, 4), 0.4)),
        x_labelled=torch.bernoulli(torch.full((3, 1, 4, 4), 0.4)),
        y_labelled=torch.tensor([0, 1, 2]),
    )
    model.loss("elbo", batch)["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def prototypes_cfg(model: str, *overrides: str):
    cfg = compose_cfg(
        f"model={model}",
        "model.hidden=[64]",
        "model.z_dim=4",
        "trainer.max_epochs=25",
        "trainer.batch_size=50",
        "data.labelled_batch_size=20",
        "trainer.eval_every_epochs=25",
        "trainer.log_every_steps=16",
        "trainer.progress_bar=false",
        "logger.embedding=100",
        "device=cpu",
        *overrides,
    )
    cfg.data = OmegaConf.create(
        {"_target_": "tests.toy_models.Prototypes", "n_labels": 20, "split_seed": 0, "binarize": True}
    )
    return cfg


@pytest.mark.parametrize(
    "model,overrides",
    [
        ("m2", []),
        ("adgm", ["model.a_dim=4", "model.eval_samples=10", "model.iw_samples=3"]),
        ("sdgm", ["model.a_dim=4", "model.eval_samples=10", "model.iw_samples=3"]),
        ("m2", ["model.marginalize=gumbel"]),
        (
            "sdgm",
            [
                "model.a_dim=4",
                "model.eval_samples=10",
                "model.iw_samples=3",
                "model.hidden=[64,64]",
                "model.batch_norm=true",
            ],
        ),
        (
            "adgm",
            [
                "model.a_dim=4",
                "model.eval_samples=10",
                "model.iw_samples=3",
                "model.train_q_a=false",
                "model.q_z_sees_a=false",
                "model.p_a=standard",
                "model.kl=analytic",
                "model.init=glorot_all",
            ],
        ),
    ],
    ids=["m2", "adgm", "sdgm", "m2-gumbel", "sdgm-batch-norm", "adgm-2015-code"],
)
def test_learns_to_classify_from_five_labels_per_class(tmp_path, model, overrides):
    metrics = run(prototypes_cfg(model, *overrides), tmp_path)
    assert metrics["eval/accuracy"] > 0.9  # chance is 0.25
    assert min(metrics[f"eval/class_accuracy/{c}"] for c in range(4)) > 0.7
    assert metrics["eval/log_likelihood"] > -64 * math.log(2)  # better than uniform pixels
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("train/elbo/loss")]
    assert losses[-1] < 0.8 * losses[0]
    assert {"train/elbo/cls", "train/elbo/unlabelled", "train/elbo/entropy"} <= set(events.Tags()["scalars"])
    # The analogies grid: one row per test digit, the digit then its style under each of the 4 labels.
    analogies = events.Images("analogies")[-1]
    assert (analogies.width, analogies.height) == (5 * 8 + 6 * 2, 4 * 8 + 5 * 2)  # make_grid pads by 2
    assert (tmp_path / "projector_config.pbtxt").is_file()


@pytest.mark.parametrize("model_class", [M2, ADGM, SDGM])
def test_needs_labels(model_class):
    with pytest.raises(UserError, match=f"model={model_class.__name__.lower()} needs labelled data"):
        model_class(model_class.Config(), DataSpec(shape=(1, 4, 4), n_classes=3, is_image=True, n_train=90))


def test_m1m2_pretrains_m1_then_trains_m2_on_its_features(tmp_path):
    cfg = prototypes_cfg(
        "m1m2",
        "model.m1_hidden=[64]",
        "model.m1_z_dim=8",
        "model.m1_epochs=10",
        "trainer.max_epochs=40",
        "trainer.eval_every_epochs=40",
    )
    metrics = run(cfg, tmp_path)
    assert metrics["eval/accuracy"] > 0.9
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    # 16 batches per epoch: M1 logs during epochs 0-9 only, M2 from epoch 10 on.
    assert max(e.step for e in events.Scalars("train/m1/loss")) <= 160
    assert min(e.step for e in events.Scalars("train/m2/loss")) > 160


def test_m1m2_reuses_a_trained_vae(tmp_path):
    vae_dir, m1m2_dir = tmp_path / "vae", tmp_path / "m1m2"
    vae_cfg = prototypes_cfg("vae", "trainer.max_epochs=2", "model.iw_samples=2")
    vae_cfg.model.activation = "softplus"
    run(vae_cfg, vae_dir)
    ckpt = vae_dir / "checkpoints" / "last.pt"
    cfg = prototypes_cfg(
        "m1m2",
        "model.m1_hidden=[64]",
        "model.m1_z_dim=4",
        "model.m1_epochs=0",
        f"model.m1_checkpoint={ckpt}",
        "trainer.max_steps=1",
    )
    from dgm_run.config import target_class, validate
    from dgm_run.train import load_pretrained

    run_config = validate(cfg)
    model = target_class(cfg.model, "model")(run_config.model, DataSpec((1, 8, 8), 4, True, 800, 20))
    load_pretrained(model)
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert torch.equal(model.m1.encoder[0].weight, trained["encoder.0.weight"])
    cfg.model.m1_z_dim = 6
    with pytest.raises(UserError, match="model.m1_checkpoint=.* does not fit this model's m1"):
        run(cfg, m1m2_dir)


def test_m1m2_reuses_the_m1_of_an_m1m2_run(tmp_path):
    """The checkpoint of an M1+M2 run holds M1 under `m1.` beside M2's weights: only M1's are loaded."""
    first = prototypes_cfg(
        "m1m2",
        "model.m1_hidden=[64]",
        "model.m1_z_dim=4",
        "model.m1_epochs=1",
        "trainer.max_epochs=2",
        "model.iw_samples=2",
    )
    run(first, tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.pt"
    cfg = prototypes_cfg(
        "m1m2", "model.m1_hidden=[64]", "model.m1_z_dim=4", "model.m1_epochs=0", f"model.m1_checkpoint={ckpt}"
    )
    from dgm_run.config import target_class, validate
    from dgm_run.train import load_pretrained

    model = target_class(cfg.model, "model")(validate(cfg).model, DataSpec((1, 8, 8), 4, True, 800, 20))
    load_pretrained(model)
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert torch.equal(model.m1.encoder[0].weight, trained["m1.encoder.0.weight"])


def test_m1m2_phases_leave_no_gradient_on_each_other():
    from dgm_run.data.base import Batch
    from dgm_run.models.semi_supervised.m1m2 import M1M2

    torch.manual_seed(0)
    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=3, z_dim=2, hidden=[8]), SPEC)
    batch = Batch(
        x=torch.bernoulli(torch.full((6, 1, 4, 4), 0.4)),
        x_labelled=torch.bernoulli(torch.full((3, 1, 4, 4), 0.4)),
        y_labelled=torch.tensor([0, 1, 2]),
    )
    for phase, other in (("m1", "m2"), ("m2", "m1")):
        model.zero_grad(set_to_none=True)
        model.loss(phase, batch)["loss"].backward()
        assert all(p.grad is not None for p in model.phase_parameters(phase))
        assert all(p.grad is None for p in model.phase_parameters(other))


def m1m2_batch(x: torch.Tensor, x_labelled: torch.Tensor):
    from dgm_run.contract import Batch

    return Batch(x=x, x_labelled=x_labelled, y_labelled=torch.arange(len(x_labelled)) % 3)


def test_m1m2_prunes_exactly_the_m1_units_at_or_under_the_threshold_at_m2s_first_step(monkeypatch):
    """Units whose posterior mean has a standard deviation over the batch of at most the threshold are
    pruned: M2 sees them as 0 and its likelihood leaves them out; the mask is fixed after M2's first step."""
    from dgm_run.models.semi_supervised.m1m2 import M1M2
    from dgm_run.models.vae.likelihoods import Gaussian

    torch.manual_seed(0)
    spreads = torch.tensor([0.0, 0.05, 0.1, 0.11, 1.0])  # the third exactly at the threshold: pruned
    offsets = torch.tensor([5.0, -2.0, 0.0, 1.0, 0.0])  # a unit's mean level does not count, its spread does
    signs = torch.tensor([1.0, -1.0] * 4).unsqueeze(1)  # 8 digits: each unit at its offset ± its spread
    means = [offsets + signs * spreads, torch.zeros(8, 5)]  # the second step's digits would prune every unit
    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=5, z_dim=2, hidden=[8], m1_prune_threshold=0.1), SPEC)
    monkeypatch.setattr(model.m1, "encode", lambda x: (means.pop(0), torch.zeros(len(x), 5)))
    seen = []
    m2_loss = model.m2.loss
    monkeypatch.setattr(model.m2, "loss", lambda phase, batch: seen.append(batch) or m2_loss(phase, batch))
    batch = m1m2_batch(torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4))
    model.loss("m2", batch)
    keep = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    assert torch.equal(model.m2.keep, keep)
    features = torch.cat([seen[0].x, seen[0].x_labelled])
    assert torch.equal(features[:, :3], torch.zeros(8, 3)) and (features[:, 3:] != 0).all()
    model.loss("m2", batch)
    assert torch.equal(model.m2.keep, keep) and int(model.m2_steps) == 2
    # log p(z1|y,z2) is the Gaussian of the kept units alone, whatever the pruned units' outputs.
    out, z1 = torch.randn(6, 10), torch.randn(6, 5)
    kept = torch.cat([out[:, 3:5], out[:, 8:10]], 1)
    torch.testing.assert_close(model.m2.log_px(out, z1), Gaussian().log_prob(kept, z1[:, 3:]))
    # The mask and the step count are in checkpoints: a resumed run keeps its units.
    resumed = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=5, z_dim=2, hidden=[8], m1_prune_threshold=0.1), SPEC)
    resumed.load_state_dict(model.state_dict())
    assert torch.equal(resumed.m2.keep, keep) and int(resumed.m2_steps) == 2


def grey_digit_data(n: int, batch_size: int):
    """DeviceData of n random grey 4x4 digits of 3 classes, 9 labelled, served unbinarized."""
    from dgm_run.data.base import DataConfig, DeviceData, Splits

    x = torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = torch.arange(n) % 3
    cfg = DataConfig(n_labels=9, labelled_batch_size=3, binarize=False)
    return DeviceData(Splits(x, y, x[:10], y[:10], n_classes=3), cfg, batch_size, torch.device("cpu"))


def test_m1m2_features_computed_once_equal_those_computed_at_every_step(monkeypatch):
    """m1_features=once: q(z1|x) of every training digit computed once and looked up by the batch's positions
    gives M2 the same features, and so the same loss and gradients, as M1's pass over each batch's digits,
    with the same draws of z1; M1 encodes the training set once and no batch after it."""
    from dgm_run.models.semi_supervised.m1m2 import M1M2

    data = grey_digit_data(90, 20)
    sizes = dict(m1_hidden=[8], m1_z_dim=5, z_dim=2, hidden=[8])
    torch.manual_seed(0)
    per_step = M1M2(M1M2.Config(**sizes), data.spec)
    once = M1M2(M1M2.Config(**sizes, m1_features="once"), data.spec)
    once.load_state_dict(per_step.state_dict())
    once.training_set(data.unbinarized, len(data.x_train))
    encoded = []
    encode = once.m1.encode
    monkeypatch.setattr(once.m1, "encode", lambda x: encoded.append(len(x)) or encode(x))
    plan = data.plan_epoch()
    for i in range(3):
        batch = data.batch(plan, i)
        terms = {}
        for name, model in (("step", per_step), ("once", once)):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(i)
            terms[name] = model.loss("m2", batch)
            terms[name]["loss"].backward()
        for key, value in terms["step"].items():
            torch.testing.assert_close(terms["once"][key], value, rtol=1e-5, atol=1e-5)
        for p, q in zip(per_step.m2.parameters(), once.m2.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
    assert encoded == [90]  # the whole training set in one pass, at the first step only
    mu, logvar = encode(data.unbinarized(torch.arange(90)))
    torch.testing.assert_close(once.table[0], mu)
    torch.testing.assert_close(once.table[1], logvar)
    # The agreement is the same draws' doing: another draw of z1 changes the loss.
    torch.manual_seed(5)
    other = once.loss("m2", batch)["loss"].detach()
    assert abs(float(other) - float(terms["once"]["loss"].detach())) > 1e-4


def test_m1m2_features_once_choose_the_units_over_the_first_1000_training_digits():
    from dgm_run.models.semi_supervised.m1m2 import M1M2, PRUNE_DIGITS

    data = grey_digit_data(1100, 100)
    torch.manual_seed(0)
    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=6, z_dim=2, hidden=[8], m1_features="once"), data.spec)
    model.training_set(data.unbinarized, len(data.x_train))
    spread = model.feature_table()[0][:PRUNE_DIGITS].std(0, correction=0)
    model.cfg.m1_prune_threshold = float(spread.median())  # some units under it, some over
    model.loss("m2", data.batch(data.plan_epoch(), 0))
    assert torch.equal(model.m2.keep, (spread > spread.median()).float())
    assert 0 < int(model.m2.keep.sum()) < 6
    with pytest.raises(InvalidValue, match="m1_features"):
        M1M2.Config(m1_features="never")


def test_m1m2_paper_experiment_adds_m2s_weight_prior_over_the_number_of_digits():
    """experiment=m1m2_mnist: M2's optimizer adds the gradient of Kingma's N(0, 1) weight prior divided by the
    number of digits N, w / N: its step equals the same optimizer's without decay on the loss's gradient plus
    w / N. M1's phase has no prior."""
    from dgm_run.config import validate
    from dgm_run.optim import UncorrectedAdam, build_optimizer

    opt_cfg = validate(compose_cfg("experiment=m1m2_mnist")).optimizer
    decay = opt_cfg.phases["m2"].weight_decay
    assert decay == pytest.approx(1 / 60_000, rel=0.01)
    torch.manual_seed(0)
    with_prior, by_hand = torch.nn.Parameter(torch.randn(6)), torch.nn.Parameter(torch.zeros(6))
    with torch.no_grad():
        by_hand.copy_(with_prior)
    assert build_optimizer([by_hand], opt_cfg, "m1").param_groups[0]["weight_decay"] == 0
    m2_step = build_optimizer([with_prior], opt_cfg, "m2")
    hand_step = UncorrectedAdam([by_hand], lr=opt_cfg.lr, betas=tuple(opt_cfg.betas), eps=opt_cfg.eps, weight_decay=0)
    for _ in range(3):
        grad = torch.randn(6) * 1e-4  # a loss's gradient as small as the prior's
        with_prior.grad, by_hand.grad = grad.clone(), grad + by_hand.detach() / 60_000
        m2_step.step()
        hand_step.step()
    torch.testing.assert_close(with_prior, by_hand, rtol=1e-4, atol=1e-7)


def test_m1m2_paper_experiment_batches_repeat_exactly_every_epoch():
    """experiment=m1m2_mnist: the batches (1 labelled + 499 unlabelled digits) are made once, shuffled, and
    taken in the same order every epoch, each with the same labelled digit (Kingma's learn_yz_x_ss.py)."""
    from dgm_run.config import validate
    from dgm_run.data.base import DeviceData, Splits

    run_config = validate(compose_cfg("experiment=m1m2_mnist"))
    x = torch.randint(0, 256, (3000, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = torch.arange(3000) % 10
    data = DeviceData(
        Splits(x, y, x[:10], y[:10], n_classes=10), run_config.data, run_config.trainer.batch_size, torch.device("cpu")
    )
    epochs = [
        [data.batch(plan, i) for i in range(data.steps_per_epoch)] for plan in (data.plan_epoch(), data.plan_epoch())
    ]
    for first, second in zip(*epochs):
        assert len(first.index) == 499 and len(first.index_labelled) == 1
        assert torch.equal(first.index, second.index) and torch.equal(first.x, second.x)
        assert torch.equal(first.index_labelled, second.index_labelled) and torch.equal(
            first.y_labelled, second.y_labelled
        )
    order = torch.cat([b.index for b in epochs[0]])
    assert len(order.unique()) == len(order) and not torch.equal(order, order.sort().values)  # shuffled once


def test_m1m2_without_a_threshold_keeps_every_unit():
    from dgm_run.models.semi_supervised.m1m2 import M1M2

    torch.manual_seed(0)
    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=5, z_dim=2, hidden=[8]), SPEC)
    with torch.no_grad():  # every unit's posterior mean constant over the digits
        model.m1.encoder[-1].weight.zero_()
    model.loss("m2", m1m2_batch(torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)))
    assert torch.equal(model.m2.keep, torch.ones(5))


def test_m1m2_features_of_grey_digits_are_never_binarized_while_m1_trains_on_fresh_draws(monkeypatch):
    from dgm_run.models.semi_supervised.m1m2 import M1M2

    torch.manual_seed(0)
    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=3, z_dim=2, hidden=[8], m1_binarize=True), SPEC)
    inputs = []
    encode = model.m1.encode
    monkeypatch.setattr(model.m1, "encode", lambda x: inputs.append(x) or encode(x))
    grey = torch.rand(6, 1, 4, 4) * 0.98 + 0.01  # every pixel strictly between black and white
    grey_l = torch.rand(3, 1, 4, 4) * 0.98 + 0.01
    batch = m1m2_batch(grey, grey_l)
    model.loss("m2", batch)
    assert torch.equal(inputs.pop(), torch.cat([grey, grey_l]).flatten(1))  # M2's features: the grey digits
    model.predict(grey)
    assert torch.equal(inputs[-1], grey.flatten(1))  # the classifier's features: the grey test digits
    model.evaluate(grey, torch.zeros(6, dtype=torch.long))
    assert set(inputs[-1].unique().tolist()) == {0.0, 1.0}  # M1's bound: on the digits it models, binarized
    model.loss("m1", batch)
    model.loss("m1", batch)
    first, second = inputs[-2:]
    for drawn in (first, second):  # M1 trains on binary pixels drawn from the grey levels
        assert set(drawn.unique().tolist()) == {0.0, 1.0} and drawn.shape == (6, 16)
    assert not torch.equal(first, second)  # a fresh draw at every step
    plain = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=3, z_dim=2, hidden=[8]), SPEC)
    monkeypatch.setattr(plain.m1, "encode", lambda x: inputs.append(x) or encode(x))
    plain.loss("m1", batch)
    assert torch.equal(inputs[-1], grey.flatten(1))  # the default: M1 sees the digits as served
    with pytest.raises(InvalidValue, match="m1_binarize: binary pixels need a Bernoulli M1"):
        M1M2.Config(m1_binarize=True, m1_likelihood="gaussian")
    with pytest.raises(InvalidValue, match="m1_prune_threshold: must be >= 0 or null"):
        M1M2.Config(m1_prune_threshold=-0.1)


def test_m1m2_says_when_it_is_evaluated_before_m2_has_trained(tmp_path, caplog):
    """A run that ends within M1's epochs reports a chance-level error: the evaluation says so."""
    cfg = prototypes_cfg(
        "m1m2",
        "model.m1_hidden=[16]",
        "model.m1_z_dim=4",
        "model.m1_epochs=3",
        "trainer.max_epochs=3",
        "trainer.eval_every_epochs=3",
        "logger.embedding=0",
    )
    with caplog.at_level("WARNING", logger="dgm_run.models.semi_supervised.m1m2"):
        metrics = run(cfg, tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.name == "dgm_run.models.semi_supervised.m1m2"]
    assert warned and "M2 has not trained yet (its phase starts at epoch 3)" in warned[-1]
    assert metrics["eval/accuracy"] < 0.6  # an untrained classifier of 4 prototypes
    caplog.clear()
    from dgm_run.models.semi_supervised.m1m2 import M1M2

    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=3, z_dim=2, hidden=[8]), SPEC)
    x = torch.rand(4, 1, 4, 4)
    with caplog.at_level("WARNING", logger="dgm_run.models.semi_supervised.m1m2"):
        model.evaluate_all(x, torch.zeros(4, dtype=torch.long))
        assert len(caplog.records) == 1
        model.loss("m2", m1m2_batch(x, x[:3]))
        model.evaluate_all(x, torch.zeros(4, dtype=torch.long))
        assert len(caplog.records) == 1  # M2 has stepped: nothing more to say


@pytest.mark.parametrize("chunk_rows", [5_000, 10])  # the draws of a in one pass, or in passes of 2, 2, 2, 1
def test_auxiliary_classifier_averages_draws_of_a_through_the_concatenated_layer(monkeypatch, chunk_rows):
    """classify computes q(a|x) and x's first-layer part once; it equals the mean over draws of
    q(y|a,x) computed on [a, x] through one concatenated layer, with the same draws."""
    monkeypatch.setitem(nn_module.EVAL_CHUNK_ROWS, "cpu", chunk_rows)
    torch.manual_seed(0)
    model = ADGM(ADGM.Config(a_dim=3, z_dim=2, hidden=[8, 6], eval_samples=7), SPEC)
    x = torch.bernoulli(torch.full((5, 16), 0.4))
    torch.manual_seed(1)
    fast = model.classify(x)
    torch.manual_seed(1)
    sizes = list(nn_module.chunks(7, 5, x.device))
    assert sizes == ([7] if chunk_rows == 5_000 else [2, 2, 2, 1])
    eps = torch.cat([torch.randn(n, 5, 3) for n in sizes])
    mu, logvar = model.q_a(x).chunk(2, -1)
    a_part, x_part = model.q_y_in.parts
    weight = torch.cat([a_part.weight, x_part.weight], 1)
    probs = [
        F.softmax(model.q_y(F.linear(torch.cat([mu + torch.exp(0.5 * logvar) * e, x], 1), weight, a_part.bias)), -1)
        for e in eps
    ]
    torch.testing.assert_close(fast, torch.stack(probs).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.sum(-1), torch.ones(5))


def test_likelihood_heads_of_m1m2s_parts_and_the_semi_supervised_models():
    from dgm_run.models.semi_supervised.m1m2 import M1M2
    from dgm_run.models.vae.likelihoods import Bernoulli, Gaussian

    model = M1M2(M1M2.Config(m1_hidden=[8], m1_z_dim=3, z_dim=2, hidden=[8], m1_likelihood="gaussian"), SPEC)
    assert isinstance(model.m1.head, Gaussian) and isinstance(model.m2.head, Gaussian)
    assert model.m1.decoder[-1].out_features == 2 * 16
    with pytest.raises(InvalidValue, match="likelihood: M2 models M1's features"):
        M1M2.Config(likelihood="bernoulli")
    assert isinstance(M2(M2.Config(z_dim=2, hidden=[8]), SPEC).head, Bernoulli)
    real = DataSpec(shape=(6,), n_classes=3, is_image=False, n_train=90, n_labels=9, unit_interval=False)
    with pytest.raises(UserError, match="model=adgm has a Bernoulli likelihood"):
        ADGM(ADGM.Config(), real)
    assert ADGM(ADGM.Config(a_dim=3, z_dim=2, hidden=[8], likelihood="gaussian"), real).p_x[-1][-1].out_features == 12
