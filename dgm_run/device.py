"""The training device and its numerical settings."""

from __future__ import annotations

import contextlib
import platform
from contextlib import AbstractContextManager
from typing import Optional

import torch

from dgm_run.errors import UserError


def resolve_device(kind: str, index: Optional[int] = None) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda: no CUDA GPU is visible to PyTorch on this machine; use device=cpu or device=auto")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu" or index is None:
        return torch.device(kind)
    if index >= torch.cuda.device_count():
        raise UserError(
            f"device.index={index}: this machine has {torch.cuda.device_count()} CUDA GPUs "
            f"(indices 0 to {torch.cuda.device_count() - 1})"
        )
    return torch.device(kind, index)


def use_device(device: torch.device) -> None:
    """Make a run's GPU the current one: CUDA graphs capture and side streams start on the current device.
    On a CPU, numbers below float's normal range are taken as zero: a CPU computes with such denormal numbers
    many times slower, and a weight whose gradient is zero shrinks into that range under weight decay (the
    input weights of M1+M2's pruned units, and their Adam moments), which would slow every step that reads it."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_flush_denormal(True)


def forked_rng(device: torch.device) -> AbstractContextManager:
    """The CPU's RNG and, on a GPU, that GPU's, restored on exit: draws inside leave the run's streams as they were."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def device_name(device: torch.device) -> str:
    """The GPU's model name, or the CPU's as the platform reports it: for benchmark reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def gpu_for_job(job_num: int) -> int:
    """The GPU of the job-th job of a sweep: jobs take the visible GPUs in turn."""
    return job_num % max(torch.cuda.device_count(), 1)


def configure_precision(precision: str, device: torch.device, cuda_graph: bool = False) -> AbstractContextManager:
    """Set matmul precision; return the autocast context for forward passes. With `cuda_graph`, autocast
    keeps no cache of cast weights: a cache filled during a capture would hand later replays tensors that
    the graph's memory pool has reused (torch asks the same of autocast around make_graphed_callables)."""
    if precision == "auto":
        precision = "tf32" if device.type == "cuda" else "fp32"
    torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")
    torch.backends.cudnn.allow_tf32 = precision in ("tf32", "bf16")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not cuda_graph)
    return contextlib.nullcontext()
