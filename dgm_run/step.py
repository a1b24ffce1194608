"""One training step: every phase of the active schedule entries on one batch, all on the device.

A step function takes a batch of fixed-shape device tensors and does, for each round of the
schedule, zero-grad, forward, backward and the optimizer steps of its phases; it adds every
loss term, and the first step whose loss was not finite, to sums kept on the device. It makes
no Python decision on a tensor's value and never waits for the device, so that it can be
captured whole and replayed. There is one function per set of active schedule entries (an
entry may be limited to some epochs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from dgm_run.contract import Batch, Progress
from dgm_run.graph import CapturedStep
from dgm_run.models.base import ScheduleEntry

StepFunction = Callable[[Batch], None]


class LossMeter:
    """Per phase: the sum of every loss term since the last read, with the number of steps summed in the
    last slot, and the first step whose loss was not finite (-1: none yet); all on the device."""

    def __init__(self, phases: list[str], progress: Progress) -> None:
        device = progress.step.device
        self.progress = progress
        self.terms: dict[str, list[str]] = {}
        self.sums: dict[str, Tensor] = {}
        self.first_bad = {p: torch.tensor(-1, device=device) for p in phases}
        self._one = torch.ones((), device=device)

    def add(self, phase: str, terms: dict[str, Tensor]) -> None:
        values = torch.stack([*(t.detach().float() for t in terms.values()), self._one])
        if phase not in self.sums:  # the terms a phase returns are fixed by its first call
            self.terms[phase] = list(terms)
            self.sums[phase] = torch.zeros_like(values)
        self.sums[phase] += values
        bad = self.first_bad[phase]
        # In place: a captured step must write into the tensors it read.
        bad.copy_(torch.where((bad < 0) & ~torch.isfinite(values[0]), self.progress.step.long(), bad))

    def read(self) -> dict[str, dict[str, float]]:
        """The mean of every term per phase since the last read (phases that did not run are left out); resets."""
        means = {}
        for phase, sums in self.sums.items():
            *totals, count = sums.tolist()
            if count:
                means[phase] = {term: total / count for term, total in zip(self.terms[phase], totals)}
            sums.zero_()
        return means

    def first_bad_steps(self) -> dict[str, int]:
        """Per phase, the index of the first step whose loss was not finite, for phases that had one."""
        return {phase: step for phase, step in ((p, int(b)) for p, b in self.first_bad.items()) if step >= 0}


class TrainStep:
    """The step functions of a model's schedule; see the module doc. `model`: a GenerativeModel, or any module
    with its `loss(phase, batch)`. `meter`: where the loss terms are summed (None: not kept). `compile`: the
    torch.compile mode of the loss (False: not compiled); `cuda_graph`: each step function captured as a
    CUDA graph (graph.py)."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        schedule: list[ScheduleEntry],
        simultaneous: bool,
        meter: Optional[LossMeter],
        autocast: Any,
        compile: Union[bool, str],
        cuda_graph: bool,
    ) -> None:
        self.model = model
        self.optimizers = optimizers
        self.schedule = schedule
        self.simultaneous = simultaneous
        self.meter = meter
        self.autocast = autocast
        self.loss = torch.compile(model.loss, mode=compile) if compile else model.loss
        self.cuda_graph = cuda_graph
        self._functions: dict[tuple[int, ...], StepFunction] = {}

    def for_epoch(self, epoch: int) -> StepFunction:
        active = tuple(i for i, entry in enumerate(self.schedule) if entry.active(epoch))
        if active not in self._functions:
            fn = self._function([self.schedule[i] for i in active])
            self._functions[active] = CapturedStep(fn, capture=True) if self.cuda_graph else fn
        return self._functions[active]

    def _function(self, entries: list[ScheduleEntry]) -> StepFunction:
        """Sequential: each entry's steps in turn, each seeing the previous update. Simultaneous: in round
        r, every entry with more than r steps takes its gradient at the same parameters, then all step."""
        if self.simultaneous:
            rounds = [
                [e.phase for e in entries if e.steps > r] for r in range(max((e.steps for e in entries), default=0))
            ]
        else:
            rounds = [[e.phase] for e in entries for _ in range(e.steps)]

        def step(batch: Batch) -> None:
            for phases in rounds:
                self.run_phases(phases, batch)

        return step

    def run_phases(self, phases: list[str], batch: Batch) -> None:
        """Gradients of every phase in `phases` at the current parameters, then one step of each.

        All gradients are cleared first, so a phase never steps on another phase's leftovers;
        by the model contract a phase's loss leaves no gradient on other phases' parameters,
        so the backward passes of several phases do not mix. With optimizer.weight_prior, clip_norm or
        clip_value, an optimizer's step first prepares its own phase's gradients (a step pre-hook,
        optim.prepare_gradients).
        """
        self.model.zero_grad(set_to_none=True)
        for phase in phases:
            with self.autocast:
                terms = self.loss(phase, batch)
            terms["loss"].backward()
            if self.meter is not None:
                self.meter.add(phase, terms)
        for phase in phases:
            self.optimizers[phase].step()
