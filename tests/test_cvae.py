"""CVAE: the hidden pixels never reach the decoder, the masks, and the completions grid of a short run."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.contract import DataSpec
from dgm_run.errors import UserError
from dgm_run.models.vae.cvae import CVAE, visible_mask
from dgm_run.train import run
from tests.conftest import TINY, compose_cfg

SPEC = DataSpec(shape=(1, 6, 6), n_classes=10, is_image=True, n_train=100)


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("condition", ["left_half", "top_half", "center_column"])
def test_hidden_pixels_never_reach_the_decoder(condition, conditional):
    torch.manual_seed(0)
    model = CVAE(CVAE.Config(z_dim=3, hidden=[16], condition=condition, conditional=conditional), SPEC)
    x = torch.rand(4, 36, requires_grad=True)
    z = torch.randn(4, 3)
    out = model.decode_logits(z, model.condition(x)).sum()
    grad = torch.autograd.grad(out, x, allow_unused=True)[0]
    reached = (torch.zeros_like(x) if grad is None else grad).abs().sum(0) > 0
    assert not reached[~model.visible].any()  # the hidden part: never
    assert reached[model.visible].all() == conditional  # the visible part: only when conditional
    # The encoder sees the whole image.
    assert (torch.autograd.grad(model.encoder(x).sum(), x)[0].abs().sum(0) > 0).all()


def test_named_masks():
    spec = DataSpec(shape=(1, 28, 28), n_classes=10, is_image=True, n_train=100)
    left = visible_mask("left_half", spec).view(28, 28)
    assert left[:, :14].all() and not left[:, 14:].any()
    top = visible_mask("top_half", spec).view(28, 28)
    assert top[:14].all() and not top[14:].any()
    column = visible_mask("center_column", spec).view(28, 28)
    assert column[:, 13:15].all() and column.sum() == 2 * 28
    with pytest.raises(UserError, match="model.condition=nope.png: not one of left_half, top_half, center_column"):
        visible_mask("nope.png", spec)


def test_completions_keep_the_visible_part_and_a_short_run_logs_them(tmp_path):
    torch.manual_seed(0)
    model = CVAE(CVAE.Config(z_dim=3, hidden=[16]), SPEC)
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.5))
    completed = model.complete(x, torch.randn(5, 3))
    assert torch.equal(completed.flatten(1)[:, model.visible], x.flatten(1)[:, model.visible])

    metrics = run(compose_cfg(*TINY, "model=cvae", "model.completions=3", "model.completion_rows=4"), tmp_path)
    assert metrics["eval/log_likelihood"] >= metrics["eval/elbo"] - 1.0 and metrics["eval/log_likelihood"] < 0
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    grid = events.Images("completions")[-1]
    # Four rows of 28x28 digits: the visible part, 3 completions, the digit; make_grid pads by 2.
    assert (grid.width, grid.height) == (5 * 30 + 2, 4 * 30 + 2)
