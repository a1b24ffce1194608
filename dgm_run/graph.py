"""A step function captured once as a CUDA graph and replayed.

On a GPU the step of these small networks is bound by kernel launches: replaying the whole step
(every phase's forward, backward and optimizer step) as one graph removes the launch cost. A
graph replays fixed memory, so the step reads its batch from fixed tensors, into which each new
batch is copied, and everything it updates (parameters, optimizer state with tensor learning
rates, the loss sums, the progress) lives in tensors that it updates in place.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

import torch

from dgm_run.contract import Batch
from dgm_run.step import StepFunction

# Eager calls before the capture: they allocate the gradients, the optimizers' state and the
# loss sums outside the graph, and warm up the libraries (cuBLAS workspaces), on a side stream.
WARMUP_CALLS = 3


class CapturedStep:
    """`fn` on fixed input tensors: eager for the first WARMUP_CALLS calls, then captured and replayed.

    With `capture=False` (a CPU) it only runs `fn` on the fixed tensors: the same path without
    the graph, which the tests compare with the plain step.
    """

    def __init__(self, fn: StepFunction, capture: bool) -> None:
        self.fn = fn
        self.capture = capture
        self.calls = 0
        self.inputs: Optional[Batch] = None
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def __call__(self, batch: Batch) -> None:
        self._load(batch)
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self.fn(self.inputs)
        elif self.calls < WARMUP_CALLS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(self.inputs)
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.fn(self.inputs)
            self.graph.replay()  # capturing records the work without doing it
        self.calls += 1

    def _load(self, batch: Batch) -> None:
        """Copy the batch's tensors into the fixed ones (made from the first batch)."""
        if self.inputs is None:
            self.inputs = Batch(**{f.name: getattr(batch, f.name) for f in fields(Batch)})
            for f in fields(Batch):
                value = getattr(batch, f.name)
                if isinstance(value, torch.Tensor):
                    setattr(self.inputs, f.name, value.clone())
            return
        for f in fields(Batch):
            value = getattr(batch, f.name)
            if isinstance(value, torch.Tensor):
                getattr(self.inputs, f.name).copy_(value, non_blocking=True)
