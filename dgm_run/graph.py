"""A step function captured once as a CUDA graph and replayed.

On a GPU the step of these small networks is bound by kernel launches: replaying the whole step
(every phase's forward, backward and optimizer step) as one graph removes the launch cost. A
graph replays fixed memory, so the step reads its batch from fixed tensors, into which each new
batch is copied, and everything it updates (parameters, optimizer state with tensor learning
rates, the loss sums, the progress) lives in tensors that it updates in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Optional, Union

import torch

from dgm_run.contract import Batch
from dgm_run.errors import UserError

# Eager calls before the capture: they allocate the gradients, the optimizers' state and the
# loss sums outside the graph, and warm up the libraries (cuBLAS workspaces), on a side stream.
WARMUP_CALLS = 3


def use_cuda_graph(setting: Union[bool, str], compile: Union[bool, str], device: torch.device) -> bool:
    """trainer.cuda_graph resolved (true, false or auto; trainer.compile: false or its mode): auto captures on
    CUDA, unless torch.compile captures graphs itself."""
    if setting is True and device.type != "cuda":
        raise UserError(
            f"trainer.cuda_graph=true needs a CUDA device (this run trains on {device.type}); "
            "use trainer.cuda_graph=auto or false"
        )
    if setting == "auto":
        return device.type == "cuda" and compile != "reduce-overhead"
    return setting


class CapturedStep:
    """`fn` on fixed input tensors: eager for the first WARMUP_CALLS calls, then captured and replayed.

    With `capture=False` (a CPU) it only runs `fn` on the fixed tensors: the same path without
    the graph, which the tests compare with the plain step.
    """

    def __init__(self, fn: Callable[[Batch], None], capture: bool) -> None:
        self.fn = fn
        self.capture = capture
        self.calls = 0
        self.inputs: Optional[Batch] = None
        self.tensor_fields: list[str] = []  # the batch's tensors, found at the first call
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
        """Copy the batch's tensors into the fixed ones, which are made from the first batch."""
        if self.inputs is None:
            self.tensor_fields = [
                f.name for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)
            ]
            self.inputs = dataclasses.replace(
                batch, **{name: getattr(batch, name).clone() for name in self.tensor_fields}
            )
        else:
            for name in self.tensor_fields:
                getattr(self.inputs, name).copy_(getattr(batch, name))
            self.inputs.progress = batch.progress
